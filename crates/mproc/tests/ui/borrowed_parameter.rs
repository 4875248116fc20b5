// Issue 12 item 10: a borrowed parameter cannot cross into a child.
#[mproc::target]
fn greet(name: &str) {
    println!("hello {name}");
}

#[mproc::target]
fn many(names: Vec<&'static str>) {
    println!("{names:?}");
}

fn main() {}
