#[derive(Debug)]
pub struct Identity {
    pub shard_count: u32,
}
impl Identity {
    pub fn fresh(_c: u128, _n: u64, shard_count: u32, _t: u64) -> Identity {
        Identity { shard_count }
    }
}
#[derive(Debug, thiserror::Error)]
#[error("identity")]
pub struct IdentityError;
impl IdentityError {
    pub fn is_io(&self) -> bool {
        false
    }
}
pub fn open_or_init_dir(
    dir: &std::path::Path,
    fresh: Identity,
    _e: Option<u128>,
) -> Result<(Identity, bool), IdentityError> {
    std::fs::create_dir_all(dir).unwrap();
    Ok((fresh, true))
}
