//! Reading the log back in order, for the state machine at start-up.

use crate::frame::{decode_frame, frame_bytes, FRAME_PAYLOAD_BYTES_MAX};
use crate::segment::segment_name;
use crate::storage::{io_error, Storage};
use crate::wal::{Wal, WalError};
use crate::LogIndex;

impl<S: Storage> Wal<S> {
    /// Hands every entry from `from` to the last one to `visit`, in order.
    ///
    /// Each segment is mapped once and each frame checked again, so a replay
    /// costs one pass over the log at memory speed. Only what is on disk can be
    /// replayed: call it before appending.
    pub fn replay<E: From<WalError>>(
        &self,
        from: LogIndex,
        mut visit: impl FnMut(LogIndex, &[u8]) -> Result<(), E>,
    ) -> Result<(), E> {
        assert!(
            self.last_index() == self.durable_index(),
            "replay reads what is on disk: nothing may be pending"
        );
        let log = self.log_map();
        let mut mapped: Option<(usize, String, S::Map)> = None;
        let mut index = from.max(self.first_index());
        while index <= self.last_index() {
            let position = log
                .segment_position(index)
                .expect("every entry in the log lies in a segment");
            if mapped.as_ref().map(|(at, ..)| *at) != Some(position) {
                let name = segment_name(log.segments[position].first_index);
                let map = self
                    .storage()
                    .map(&name)
                    .map_err(io_error("map", self.storage(), &name))
                    .map_err(WalError::from)?;
                mapped = Some((position, name, map));
            }
            let (_, name, map) = mapped.as_ref().expect("mapped just above");
            let entry = log.entry(index).expect("the entry is in the log");
            let start = entry.offset as usize;
            let bytes = &map[start..start + frame_bytes(entry.payload_len as usize)];
            let frame = decode_frame(bytes, FRAME_PAYLOAD_BYTES_MAX).map_err(|cause| {
                WalError::Damaged {
                    index,
                    file: self.storage().describe(name),
                    cause,
                }
            })?;
            assert_eq!(
                frame.header.index, index,
                "the log map points at the wrong frame"
            );
            visit(index, frame.payload)?;
            index = index.next();
        }
        Ok(())
    }
}
