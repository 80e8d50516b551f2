//! Links the module with a 64 KiB stack instead of Rust's default 1 MiB, which alone would
//! be more than the default `limits.memory_pages` (16 pages, 1 MiB): a module whose memory
//! starts above its ceiling does not load.

fn main() {
    if std::env::var("CARGO_CFG_TARGET_ARCH").as_deref() == Ok("wasm32") {
        println!("cargo::rustc-link-arg-cdylib=-zstack-size=65536");
    }
}
