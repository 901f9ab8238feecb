pub fn executor_builder(core: usize, _cores: usize) -> glommio::LocalExecutorBuilder {
    glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .name(&format!("keel-{core}"))
        .spin_before_park(std::time::Duration::from_micros(500))
        .io_memory(1 << 20)
}
