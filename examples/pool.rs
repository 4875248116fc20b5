//! CPython's classic Pool snippet, ported one to one.
//!
//! ```python
//! from multiprocessing import Pool
//!
//! def f(x):
//!     return x*x
//!
//! if __name__ == '__main__':
//!     with Pool(4) as p:
//!         print(p.map(f, [1, 2, 3]))
//! ```

use mproc::Pool;

#[mproc::target]
fn f(x: u64) -> u64 {
    x * x
}

#[mproc::main]
fn main() -> mproc::Result<()> {
    // `with Pool(4) as p:` — dropping `p` terminates it, as `__exit__` does.
    let p = Pool::new(4)?;
    println!("{:?}", p.map(f, [1, 2, 3])?);
    Ok(())
}
