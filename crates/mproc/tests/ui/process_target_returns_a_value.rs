// Issue 12 item 10: a `Process` target returning a value points to `spawn`.
#[mproc::target]
fn square(x: u64) -> u64 {
    x * x
}

fn main() {
    let _p = mproc::Process::new(square, (3,));
}
