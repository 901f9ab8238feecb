use std::process::ExitCode;

/// mimalloc rather than glibc's malloc: under replicated writes glibc's
/// allocator took about a tenth of the executors' time (`malloc_consolidate`
/// among it), and mimalloc cut the CPU per write of a 3-node cluster by
/// 10-15% and steadied it, for ~10% more RSS (docs/PERFORMANCE.md, "A
/// three-node cluster against one node").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    keel_engine::cli::run(std::env::args_os()).into()
}
