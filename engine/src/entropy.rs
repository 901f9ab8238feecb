//! Random bits for what must differ between runs and nodes (a fresh data
//! directory's identity, a handshake's nonce), read at the server's edge:
//! the node loop and the state machine never call this.

use std::time::{SystemTime, UNIX_EPOCH};

/// 128 random bits from /dev/urandom (the clock and pid if it cannot be read).
pub fn random_u128() -> u128 {
    let mut bytes = [0u8; 16];
    if let Ok(mut file) = std::fs::File::open("/dev/urandom") {
        use std::io::Read;
        if file.read_exact(&mut bytes).is_ok() {
            return u128::from_le_bytes(bytes);
        }
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    now.as_nanos() ^ u128::from(std::process::id()) << 64
}
