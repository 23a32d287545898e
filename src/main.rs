//! The `quantease-gguf` command-line tool.

fn main() {
    println!("quantease-gguf {}", env!("CARGO_PKG_VERSION"));
}
