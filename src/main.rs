//! The `freshen` command (see [`freshen::cli`]).

/// Keeps freed tensor memory for reuse (see `cli::process`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    freshen::cli::run()
}
