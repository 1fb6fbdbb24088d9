fn main() {
    eprintln!("mcp-guard: not yet implemented");
    std::process::exit(2);
}
