//! Compiles the C-variadic shims (variadic.c: the exec family and
//! syscall) into libmpaudit.so and exports them: rustc's own version script hides every symbol that is not
//! a Rust `#[no_mangle]` item, so a second script names these global.
fn main() {
    println!("cargo:rerun-if-changed=src/variadic.c");
    println!("cargo:rerun-if-changed=src/variadic.map");
    cc::Build::new()
        .file("src/variadic.c")
        .compile("mpaudit_variadic");
    let map = std::path::Path::new(&std::env::var("CARGO_MANIFEST_DIR").expect("set by cargo"))
        .join("src/variadic.map");
    println!(
        "cargo:rustc-cdylib-link-arg=-Wl,--version-script={}",
        map.display()
    );
    for sym in ["execl", "execlp", "execle", "syscall"] {
        println!("cargo:rustc-cdylib-link-arg=-Wl,--undefined={sym}");
    }
}
