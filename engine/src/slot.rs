//! Redis Cluster's hash slots: which of the 16384 slots a key belongs to, so
//! that a cluster-aware client routes a key to the same place Redis would.
//!
//! The slot is the CRC16 of the key (the XMODEM variant Redis's `crc16.c`
//! uses) modulo [`SLOT_COUNT`]. A hash tag narrows what is hashed, so that
//! related keys (`{user1000}.following`, `{user1000}.followers`) share a slot
//! and multi-key commands on them stay on one node.

/// Hash slots in a Redis Cluster.
pub const SLOT_COUNT: u16 = 16384;

/// CRC16-XMODEM (polynomial 0x1021, initial value 0), one table entry per
/// byte value; computed at compile time.
const CRC16_TABLE: [u16; 256] = crc16_table();

const fn crc16_table() -> [u16; 256] {
    let mut table = [0u16; 256];
    let mut byte = 0;
    while byte < 256 {
        let mut crc = (byte as u16) << 8;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
            bit += 1;
        }
        table[byte] = crc;
        byte += 1;
    }
    table
}

/// CRC16-XMODEM of `bytes`, as Redis's `crc16()`.
pub fn crc16(bytes: &[u8]) -> u16 {
    bytes.iter().fold(0u16, |crc, &byte| {
        (crc << 8) ^ CRC16_TABLE[usize::from((crc >> 8) as u8 ^ byte)]
    })
}

/// The slot of `key`, as Redis's `keyHashSlot`: if the key holds a `{` and,
/// after the first `{`, a `}` with at least one byte between them, only those
/// bytes are hashed; otherwise (no `{`, no `}` after it, or `{}`) the whole key.
pub fn key_slot(key: &[u8]) -> u16 {
    crc16(hash_tag(key).unwrap_or(key)) % SLOT_COUNT
}

/// The bytes between the first `{` and the first `}` after it, if not empty.
fn hash_tag(key: &[u8]) -> Option<&[u8]> {
    let open = key.iter().position(|&byte| byte == b'{')?;
    let after_open = &key[open + 1..];
    let close = after_open.iter().position(|&byte| byte == b'}')?;
    (close > 0).then(|| &after_open[..close])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc16_is_xmodem() {
        assert_eq!(crc16(b"123456789"), 0x31C3);
        assert_eq!(crc16(b""), 0);
    }

    #[test]
    fn slots_match_redis() {
        assert_eq!(key_slot(b"foo"), 12182);
        assert_eq!(key_slot(b"hello"), 866);
        assert_eq!(key_slot(b""), 0);
        assert_eq!(
            key_slot(b"{user1000}.following"),
            key_slot(b"{user1000}.followers")
        );
        assert_eq!(key_slot(b"{user1000}.following"), key_slot(b"user1000"));
    }

    #[test]
    fn hash_tags_follow_key_hash_slot() {
        assert_eq!(hash_tag(b"foo{}{bar}"), None);
        assert_eq!(key_slot(b"foo{}{bar}"), crc16(b"foo{}{bar}") % SLOT_COUNT);
        assert_eq!(hash_tag(b"foo{{bar}}zap"), Some(&b"{bar"[..]));
        assert_eq!(key_slot(b"foo{{bar}}zap"), key_slot(b"{bar"));
        assert_eq!(hash_tag(b"foo{bar}{zap}"), Some(&b"bar"[..]));
        assert_eq!(key_slot(b"foo{bar}{zap}"), key_slot(b"bar"));
        assert_eq!(hash_tag(b"foo{bar"), None);
        assert_eq!(hash_tag(b"foo}bar{"), None);
        assert_eq!(hash_tag(b"}{x}"), Some(&b"x"[..]));
    }

    #[test]
    fn every_slot_is_in_range() {
        for index in 0..10_000u32 {
            assert!(key_slot(format!("key:{index}").as_bytes()) < SLOT_COUNT);
        }
    }
}
