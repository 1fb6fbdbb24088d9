fn main() {
    eprintln!("crdgen: not yet implemented");
    std::process::exit(2);
}
