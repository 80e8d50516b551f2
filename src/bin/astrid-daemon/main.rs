//! `astrid-daemon`: the Astrid kernel daemon. Everything it does is in
//! [`astrid::daemon`]; see `astrid-daemon --help`.

/// mimalloc: the kernel's threads hand buffers to each other (a request decoded on the
/// sessions' thread is freed by the ledger's syncer), which the system allocator handles
/// slowly; measured with `loadgen --suite kv`.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    astrid::daemon::main(std::env::args_os())
}
