//! `astrid-daemon`: the Astrid kernel daemon. Everything it does is in
//! [`astrid::daemon`]; see `astrid-daemon --help`.

fn main() -> std::process::ExitCode {
    astrid::daemon::main(std::env::args_os())
}

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
