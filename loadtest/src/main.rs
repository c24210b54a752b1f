//! `loadtest`: load generator, fraud oracle and report for vigil.

fn main() {
    eprintln!("loadtest: no commands yet; see README.md");
    std::process::exit(2);
}
