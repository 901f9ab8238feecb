//! Snapshot transfer (§5.1, Figure 5.3) to a follower whose missing entries
//! were compacted: bounded chunks, one in flight, resumable. The follower
//! reports how many bytes it holds, so a chunk lost or a leader restarted
//! resumes where the follower is rather than from the start.

use crate::group::Group;
use crate::interface::Output;
use crate::message::Message;
use crate::progress::Mode;
use crate::types::{EntryId, NodeId, SnapshotMeta};

impl Group {
    /// Sends `to` the next chunk of the newest snapshot, unless one is
    /// waiting for its reply.
    pub(crate) fn send_snapshot_chunk(&mut self, to: NodeId, out: &mut Vec<Output>) {
        let lead = self.lead.as_mut().expect("only a leader sends snapshots");
        let Some(progress) = lead.progress.get_mut(&to) else {
            return;
        };
        let Mode::Snapshot { offset, waiting } = &mut progress.mode else {
            return;
        };
        if *waiting {
            return;
        }
        *waiting = true;
        let data = self.log.snapshot_data();
        let start = usize::try_from(*offset).map_or(data.len(), |offset| offset.min(data.len()));
        let chunk = usize::try_from(self.config.snapshot_chunk_bytes).unwrap_or(usize::MAX);
        let end = start.saturating_add(chunk).min(data.len());
        let message = Message::Snapshot {
            meta: self.log.snapshot().clone(),
            offset: start as u64,
            data: data[start..end].to_vec(),
            done: end == data.len(),
        };
        out.push(Output::Send(self.envelope(to, message)));
    }

    /// A chunk at a follower. Chunks append at the bytes already held (an
    /// earlier offset repeats bytes it has, a later one leaves a gap and is
    /// dropped); a chunk of another snapshot starts over, at offset 0 only.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn on_snapshot(
        &mut self,
        now_ms: u64,
        from: NodeId,
        meta: SnapshotMeta,
        offset: u64,
        data: Vec<u8>,
        done: bool,
        out: &mut Vec<Output>,
    ) {
        if !self.follow(now_ms, from, out) {
            return;
        }
        let last = meta.last;
        if last.index <= self.log.commit() {
            // Already holds all of it (committed entries match the leader's).
            return self.reply_snapshot(from, last, 0, true, out);
        }
        let held = match &mut self.incoming {
            Some((incoming, bytes)) if *incoming == meta => bytes,
            _ if offset == 0 => &mut self.incoming.insert((meta.clone(), Vec::new())).1,
            _ => return self.reply_snapshot(from, last, 0, false, out),
        };
        let held_bytes = held.len() as u64;
        let end = offset.saturating_add(data.len() as u64);
        if offset <= held_bytes && end > held_bytes {
            if end > self.config.snapshot_bytes_max {
                self.incoming = None;
                return;
            }
            let skip = usize::try_from(held_bytes - offset).expect("within the chunk");
            held.extend_from_slice(&data[skip..]);
        }
        let received = held.len() as u64;
        if !(done && end == received) {
            return self.reply_snapshot(from, last, received, false, out);
        }
        let (meta, data) = self.incoming.take().expect("a snapshot is being received");
        self.log.install(meta.clone(), data.clone());
        out.push(Output::InstallSnapshot { meta, data });
        self.refresh_membership(out);
        self.reply_snapshot(from, last, received, true, out);
    }

    /// Answered after durable: `installed` promises the snapshot survives.
    fn reply_snapshot(
        &self,
        to: NodeId,
        last: EntryId,
        received: u64,
        installed: bool,
        out: &mut Vec<Output>,
    ) {
        let message = Message::SnapshotReply {
            last,
            received,
            installed,
        };
        out.push(Output::SendAfterDurable(self.envelope(to, message)));
    }

    pub(crate) fn on_snapshot_reply(
        &mut self,
        now_ms: u64,
        from: NodeId,
        last: EntryId,
        received: u64,
        installed: bool,
        out: &mut Vec<Output>,
    ) {
        let snapshot_last = self.log.snapshot().last;
        let Some(lead) = self.lead.as_mut() else {
            return;
        };
        let Some(progress) = lead.progress.get_mut(&from) else {
            return;
        };
        progress.active = true;
        if installed {
            // The follower holds everything through `last`, durably.
            let news = progress.on_matched(last);
            progress.become_probe(last.index.next());
            if news {
                self.maybe_commit(now_ms, out);
            }
        } else if let Mode::Snapshot { offset, waiting } = &mut progress.mode {
            *offset = if last == snapshot_last { received } else { 0 };
            *waiting = false;
        } else {
            return;
        }
        if self.lead.is_some() {
            self.send_append(from, out);
        }
    }
}
