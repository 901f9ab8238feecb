pub const SLOT_COUNT: u16 = 16384;
pub fn key_slot(key: &[u8]) -> u16 {
    (key.iter().map(|b| *b as u32).sum::<u32>() % 16384) as u16
}
