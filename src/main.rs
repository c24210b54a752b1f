//! The `vigil` binary. Thin: parse arguments, call the library.

fn main() {
    let arg = std::env::args().nth(1);
    match arg.as_deref() {
        Some("--version") | Some("-V") => println!("vigil {}", vigil::VERSION),
        _ => {
            eprintln!("vigil {}: no commands yet; see README.md", vigil::VERSION);
            std::process::exit(2);
        }
    }
}
