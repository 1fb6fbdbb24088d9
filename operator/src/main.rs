fn main() {
    eprintln!("mcp-guard-operator: not yet implemented");
    std::process::exit(2);
}
