fn main() -> std::process::ExitCode {
    livegate::cli::main()
}
