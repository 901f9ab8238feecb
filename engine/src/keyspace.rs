use crate::operation::Operation;
use std::collections::HashMap;
#[derive(Debug, Default)]
pub struct Keyspace {
    map: HashMap<Vec<u8>, (Vec<u8>, Option<u64>)>,
}
pub struct Item<'a> {
    pub value: &'a [u8],
    pub expire_at_unix_ms: Option<u64>,
}
impl Keyspace {
    pub fn new() -> Keyspace {
        Keyspace::default()
    }
    pub fn len(&self) -> usize {
        self.map.len()
    }
    pub fn expires_len(&self) -> usize {
        self.map.values().filter(|v| v.1.is_some()).count()
    }
    pub fn data_bytes(&self) -> usize {
        0
    }
    pub fn get(&self, key: &[u8], now: u64) -> Option<Item<'_>> {
        self.map
            .get(key)
            .filter(|v| v.1.map_or(true, |at| at > now))
            .map(|v| Item {
                value: &v.0,
                expire_at_unix_ms: v.1,
            })
    }
    pub fn apply(&mut self, op: &Operation) {
        match op {
            Operation::Set {
                key,
                value,
                expire_at_unix_ms,
            } => {
                self.map
                    .insert(key.clone(), (value.clone(), *expire_at_unix_ms));
            }
            Operation::Delete { keys } => {
                for k in keys {
                    self.map.remove(k);
                }
            }
            Operation::FlushAll => self.map.clear(),
            Operation::Expire { key, at_unix_ms } => {
                if let Some(v) = self.map.get_mut(key) {
                    v.1 = Some(*at_unix_ms);
                }
            }
            Operation::Persist { key } => {
                if let Some(v) = self.map.get_mut(key) {
                    v.1 = None;
                }
            }
            Operation::Batch { ops } => {
                for op in ops {
                    self.apply(op);
                }
            }
        }
    }
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8], Option<u64>)> {
        self.map
            .iter()
            .map(|(k, v)| (k.as_slice(), v.0.as_slice(), v.1))
    }
    pub fn insert_loaded(&mut self, key: &[u8], value: &[u8], expire: Option<u64>) {
        self.map.insert(key.to_vec(), (value.to_vec(), expire));
    }
    pub fn expired_keys(&self, now: u64, limit: usize) -> Vec<Vec<u8>> {
        self.map
            .iter()
            .filter(|(_, v)| v.1.is_some_and(|at| at <= now))
            .take(limit)
            .map(|(k, _)| k.clone())
            .collect()
    }
    pub fn keys(&self, _pattern: &[u8], _now: u64) -> Vec<Vec<u8>> {
        self.map.keys().cloned().collect()
    }
    pub fn scan(&self, _c: u64, _n: usize, _p: Option<&[u8]>, _now: u64) -> (u64, Vec<Vec<u8>>) {
        (0, self.map.keys().cloned().collect())
    }
}
pub fn glob_match(p: &[u8], s: &[u8]) -> bool {
    p == b"*" || p == s
}
