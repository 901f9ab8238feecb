//! Declares the `madsim` cfg, which simulation builds set through RUSTFLAGS
//! (`scripts/sim.sh`), so that normal builds do not warn about it.

fn main() {
    println!("cargo::rustc-check-cfg=cfg(madsim)");
}
