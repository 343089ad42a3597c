//! The `dep2p` command-line program; see `dep2p --help`.

fn main() {
    std::process::exit(dep2p_tokio::cli::main());
}
