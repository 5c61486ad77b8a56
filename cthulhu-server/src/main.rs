//! `cthulhu-server`: the Cthulhu reference server (see the library's [`cthulhu_server::cli`]).

fn main() -> std::process::ExitCode {
    cthulhu_server::cli::main()
}
