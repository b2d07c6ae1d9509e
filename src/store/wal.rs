//! The token write-ahead log: what makes the hot path durable cheaply.
//!
//! Making sled durable costs a log append, a `sync_file_range` and an `fdatasync` of a growing
//! file (a journal commit each time): about a millisecond per batch under load. Every token
//! change (and every user change) is therefore also appended, as the whole new record, to this
//! log, a file of fixed size written in place as a ring. Making a batch durable is then one `pwrite` and one
//! `fdatasync` of blocks that already exist, with no metadata to journal.
//!
//! Layout: block 0 is the header `magic, checkpoint_seq, checkpoint_offset` (with a CRC);
//! records follow from [`DATA_START`]: `magic, payload length, seq, crc32(seq || payload),
//! payload`; the payload is the store's (its first octet says the record's kind, see
//! [`Wal::replays_typed`]; this module does not read it). Each batch of records starts at a block boundary, so batches never share a block
//! and several can be written and flushed at once (group commit with more than one flush in
//! flight: the disk here completes two concurrent write + fdatasync pairs in 100 µs against
//! 80 µs for one). A reader that meets anything but the next record mid-block goes on at the
//! next block. A record never straddles the end of the ring; a pad marker sends the reader back
//! to the start. Sequence numbers rise by one per record, so a stale record from an earlier lap
//! (or a batch written after a hole a crash left) is never taken for the next one.
//!
//! A *checkpoint* makes sled itself durable (flush + fdatasync) and then records, in the
//! header, the last sequence number sled now holds: records up to it are no longer needed and
//! their space is reused. On open, the records after the checkpoint are read in order, stopping
//! at the first that does not verify (a torn tail), and written back into sled.

use std::collections::BTreeSet;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use super::lock;

/// Size of the ring file, header included.
pub const DEFAULT_CAPACITY: u64 = 64 * 1024 * 1024;
/// Records start after the header block.
pub const DATA_START: u64 = 4096;
/// The header of a log whose records carry typed payloads (the store's record kind first),
/// batches on block boundaries. Builds before it would take a typed payload for a token
/// record: they must refuse such a log (they take an unknown header for a damaged one).
const HEADER_MAGIC: u32 = 0x4F47_5733; // "OGW3"
/// The header of the layout before typed payloads (every payload a token record), batches on
/// block boundaries; read, its payloads reported untyped ([`Wal::replays_typed`]).
const HEADER_MAGIC_V2: u32 = 0x4F47_5732; // "OGW2"
/// The header of the first layout (records back to back, untyped), which this reader also
/// reads. Builds before [`HEADER_MAGIC_V2`] read only up to the first batch's padding.
const HEADER_MAGIC_V1: u32 = 0x4F47_5741; // "OGWA"
const RECORD_MAGIC: u32 = 0x4F47_5252; // "OGRR"
const PAD_MAGIC: u32 = 0x4F47_5044; // "OGPD"
/// magic + length + seq + crc.
const RECORD_HEADER: usize = 4 + 4 + 8 + 4;
/// Largest payload the reader accepts (a token record is a few hundred octets); a writer must
/// not log a larger one (replay would stop at it).
pub const MAX_PAYLOAD: usize = 64 * 1024;

/// The log file and where the next batch goes.
pub struct Wal {
    files: Arc<LogFiles>,
    capacity: u64,
    /// Offset of the next batch (a block boundary for the batches this build writes), and the
    /// number of the last record placed.
    write_offset: u64,
    last_written_seq: u64,
    /// The oldest record still needed starts here (just after the last checkpoint).
    checkpoint_offset: u64,
    /// Whether the records replayed at open carry typed payloads (a log this build wrote) or
    /// are all token records (a log of an earlier build).
    replays_typed: bool,
    checkpoint_seq: u64,
    /// Batches placed so far; a batch's ticket is its number.
    placed: u64,
    commits: Arc<Commits>,
}

/// Block size of direct writes (offsets, lengths and buffers are multiples of it).
const BLOCK: usize = 4096;

/// The log's handles, shared with the batch writes that run outside the log's lock.
///
/// Linux reports a failed write-back to one fdatasync per open file only, so a flush that
/// runs beside a failing one on the same handle could return Ok for pages that never reached
/// the disk. Hence: the header has a handle of its own; batches written through the page
/// cache take turns (write and flush under `buffered_turn`); batches written directly report
/// their write errors from the write itself, and their flushes only flush the device.
struct LogFiles {
    /// Reads, and record writes where direct I/O is not available.
    buffered: File,
    /// Takes turns of page-cache batch writes and their fdatasync.
    buffered_turn: Mutex<()>,
    /// The header's writes and fdatasync.
    header: File,
    /// Record writes with `O_DIRECT` where the filesystem allows it: the data goes to the
    /// device without dirtying the page cache, so the fdatasync that follows only flushes the
    /// device (74 µs against 100 µs for a buffered write on this project's disk).
    direct: Option<File>,
    /// Set once the filesystem refused a direct write (an alignment larger than a block).
    direct_refused: AtomicBool,
}

/// One write of a batch: whole blocks from an aligned buffer, of which `len` bytes are meant
/// (the rest is padding a page-cache write may leave out), at `offset`.
struct Piece<'a> {
    blocks: &'a [u8],
    len: usize,
    offset: u64,
}

impl LogFiles {
    /// Writes `pieces` and makes them durable: directly if possible, else through the page
    /// cache (one batch at a time).
    fn write_durably(&self, pieces: &[Piece<'_>]) -> io::Result<()> {
        if let Some(direct) = &self.direct {
            if !self.direct_refused.load(Ordering::Relaxed) {
                let written = pieces
                    .iter()
                    .try_for_each(|p| direct.write_all_at(p.blocks, p.offset));
                match written {
                    Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                        if !self.direct_refused.swap(true, Ordering::Relaxed) {
                            tracing::warn!(error = %e, "token log: direct I/O refused; writing through the page cache");
                        }
                    }
                    Err(e) => return Err(e),
                    Ok(()) => return direct.sync_data(),
                }
            }
        }
        let _turn = lock(&self.buffered_turn);
        for p in pieces {
            self.buffered
                .write_all_at(&p.blocks[..p.len.min(p.blocks.len())], p.offset)?;
        }
        self.buffered.sync_data()
    }
}

/// Opens `path` for direct I/O; `None` where the filesystem refuses `O_DIRECT` or the ring is
/// not a whole number of blocks.
fn open_direct(path: &Path, capacity: u64) -> Option<File> {
    if capacity % BLOCK as u64 != 0 {
        return None;
    }
    OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)
        .ok()
}

/// `offset` rounded up to a block boundary.
fn block_up(offset: u64) -> u64 {
    offset.div_ceil(BLOCK as u64) * BLOCK as u64
}

/// A batch of records placed in the ring, written and flushed outside the log's lock.
pub struct Commit {
    files: Arc<LogFiles>,
    commits: Arc<Commits>,
    /// This batch's ticket, or (with no records) the last batch placed before: waiting for it
    /// covers every record appended before.
    ticket: u64,
    records: Vec<u8>,
    /// Where the records go (a block boundary), and where the end-of-ring marker goes if the
    /// batch did not fit before the end.
    at: u64,
    wrap_marker: Option<u64>,
    ring_end: u64,
    /// Its ticket is finished (or it has none): dropping it unfinished finishes the ticket as
    /// failed, so later syncs fail rather than wait for it forever.
    finished: bool,
}

impl Drop for Commit {
    fn drop(&mut self) {
        if !self.finished {
            self.commits.finish(self.ticket, false);
        }
    }
}

impl Commit {
    /// Writes the batch and flushes it, then waits until every batch placed before it is
    /// durable too: replay stops at the first hole, so a batch is only as durable as those
    /// before it. Fails if this batch or an earlier one (since the last checkpoint) failed.
    pub fn complete(mut self) -> io::Result<()> {
        if !self.finished {
            let written = self.write();
            self.commits.finish(self.ticket, written.is_ok());
            self.finished = true;
            written?;
        }
        self.commits.wait(self.ticket)
    }

    fn write(&self) -> io::Result<()> {
        let mut marker_buffer = Vec::new();
        let mut pieces = Vec::with_capacity(2);
        if let Some(offset) = self.wrap_marker {
            let block = aligned(&mut marker_buffer, BLOCK)?;
            block[..4].copy_from_slice(&PAD_MAGIC.to_le_bytes());
            let len = usize::try_from(self.ring_end - offset)
                .unwrap_or(BLOCK)
                .min(BLOCK);
            pieces.push(Piece {
                blocks: block,
                len,
                offset,
            });
        }
        let len = self.records.len();
        let whole = len.div_ceil(BLOCK) * BLOCK;
        let mut buffer = Vec::new();
        let window = aligned(&mut buffer, whole)?;
        // The rest of the last block stays zero (a fresh buffer): padding.
        window[..len].copy_from_slice(&self.records);
        let room = usize::try_from(self.ring_end - self.at).unwrap_or(whole);
        pieces.push(Piece {
            blocks: window,
            len: room.min(whole),
            offset: self.at,
        });
        self.files.write_durably(&pieces)
    }
}

/// Which batches are durable. Batches are written concurrently and may finish out of order;
/// a sync returns once every batch up to its own has finished.
#[derive(Default)]
struct Commits {
    state: Mutex<CommitState>,
    changed: Condvar,
}

#[derive(Default)]
struct CommitState {
    /// Every ticket up to this one has finished.
    finished_upto: u64,
    /// Finished tickets beyond `finished_upto` (an earlier one still runs).
    finished_early: BTreeSet<u64>,
    /// The first ticket that failed since the last checkpoint: it and every later batch are
    /// not durable through the log (replay would stop at its hole).
    failed_from: Option<u64>,
}

impl Commits {
    fn lock(&self) -> std::sync::MutexGuard<'_, CommitState> {
        lock(&self.state)
    }

    fn finish(&self, ticket: u64, ok: bool) {
        let mut state = self.lock();
        if !ok && state.failed_from.is_none_or(|first| ticket < first) {
            state.failed_from = Some(ticket);
        }
        state.finished_early.insert(ticket);
        loop {
            let next = state.finished_upto + 1;
            if !state.finished_early.remove(&next) {
                break;
            }
            state.finished_upto = next;
        }
        drop(state);
        self.changed.notify_all();
    }

    /// Waits until every ticket up to `ticket` has finished, failed or not.
    fn wait_finished(&self, ticket: u64) -> std::sync::MutexGuard<'_, CommitState> {
        let mut state = self.lock();
        while state.finished_upto < ticket {
            state = self.changed.wait(state).unwrap_or_else(|p| p.into_inner());
        }
        state
    }

    fn wait(&self, ticket: u64) -> io::Result<()> {
        match self.wait_finished(ticket).failed_from {
            Some(first) if first <= ticket => Err(io::Error::other(
                "a batch of the token log could not be written; waiting for a checkpoint",
            )),
            _ => Ok(()),
        }
    }

    /// A checkpoint now holds every record placed so far: failures before it no longer count.
    fn forgive(&self) {
        self.lock().failed_from = None;
    }
}

/// A block-aligned, zeroed window of `len` bytes in `buffer` (an empty `Vec` each batch: batches
/// are written concurrently, each from its own buffer).
fn aligned(buffer: &mut Vec<u8>, len: usize) -> io::Result<&mut [u8]> {
    if buffer.len() < len + BLOCK {
        buffer.resize(len + BLOCK, 0);
    }
    let skip = buffer.as_ptr().align_offset(BLOCK);
    let end = skip
        .checked_add(len)
        .ok_or_else(|| io::Error::other("cannot align a direct I/O buffer"))?;
    buffer
        .get_mut(skip..end)
        .ok_or_else(|| io::Error::other("cannot align a direct I/O buffer"))
}

/// A position in the log: the last record placed and where the next one goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mark {
    seq: u64,
    offset: u64,
    /// The last batch placed: it must have finished before the log may forget it.
    ticket: u64,
}

/// Records encoded but not yet written, numbered as they are appended.
pub struct Pending {
    bytes: Vec<u8>,
    next_seq: u64,
}

impl Pending {
    /// Continues the numbering after `last_seq`.
    pub fn after(last_seq: u64) -> Pending {
        Pending {
            bytes: Vec::new(),
            next_seq: last_seq + 1,
        }
    }

    /// Encodes a record whose payload is `parts` one after the other, taking the next
    /// sequence number.
    pub fn append(&mut self, parts: &[&[u8]]) {
        let seq = self.next_seq;
        self.next_seq += 1;
        let total: usize = parts.iter().map(|p| p.len()).sum();
        let len = u32::try_from(total).unwrap_or(u32::MAX);
        let mut crc = crc32fast::Hasher::new();
        crc.update(&seq.to_le_bytes());
        for part in parts {
            crc.update(part);
        }
        self.bytes.extend_from_slice(&RECORD_MAGIC.to_le_bytes());
        self.bytes.extend_from_slice(&len.to_le_bytes());
        self.bytes.extend_from_slice(&seq.to_le_bytes());
        self.bytes.extend_from_slice(&crc.finalize().to_le_bytes());
        for part in parts {
            self.bytes.extend_from_slice(part);
        }
    }

    /// Sequence number of the last record appended (written or not).
    pub fn last_seq(&self) -> u64 {
        self.next_seq - 1
    }

    /// Takes the encoded records, leaving the numbering as it is.
    pub fn take(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.bytes)
    }

    /// Drops the encoded records (they are held elsewhere after a checkpoint).
    pub fn clear(&mut self) {
        self.bytes.clear();
    }

    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }
}

impl Wal {
    /// Opens the log at `path`, creating and zero-filling it (once) if missing. Returns the log
    /// and the payloads of the records after the last checkpoint, oldest first; new records
    /// continue from [`Wal::last_seq`].
    pub fn open(path: &Path, capacity: u64) -> io::Result<(Wal, Vec<Vec<u8>>)> {
        let capacity = capacity.max(DATA_START * 4);
        let exists = path.exists();
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(path)?;
        let len = file.metadata()?.len();
        if exists && len != 0 && len != capacity {
            // Zero-filling a log of another size would wipe records not yet replayed.
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("is {len} bytes, expected {capacity}; refusing to reuse it"),
            ));
        }
        if !exists || len == 0 {
            // Real blocks, not a sparse file: later writes then change no metadata.
            let zeros = vec![0u8; 1024 * 1024];
            let mut at = 0;
            while at < capacity {
                let n = zeros
                    .len()
                    .min(usize::try_from(capacity - at).unwrap_or(zeros.len()));
                file.write_all_at(&zeros[..n], at)?;
                at += n as u64;
            }
            file.sync_all()?;
        }
        let (checkpoint_seq, checkpoint_offset, typed) = match read_header(&file, capacity)? {
            Some(header) => header,
            // No header yet: fine only if no record was ever written (a crash between the
            // zero-fill and the first header). Otherwise replaying from sequence 1 would roll
            // tokens back to old states: refuse and say so.
            None if never_written(&file)? => (0, DATA_START, true),
            None => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "header is damaged but the log holds records; refusing to guess where \
                     replay starts (restore the store from backup)",
                ))
            }
        };
        let mut wal = Wal {
            files: Arc::new(LogFiles {
                buffered: file,
                buffered_turn: Mutex::new(()),
                header: OpenOptions::new().read(true).write(true).open(path)?,
                direct: open_direct(path, capacity),
                direct_refused: AtomicBool::new(false),
            }),
            capacity,
            write_offset: checkpoint_offset,
            last_written_seq: checkpoint_seq,
            checkpoint_offset,
            checkpoint_seq,
            placed: 0,
            commits: Arc::default(),
            replays_typed: typed,
        };
        let replay = wal.read_after_checkpoint()?;
        // New batches start on a fresh block, after whatever the last one left in its own.
        // (What lies between the header's offset and here is replayed now and checkpointed
        // by the store's first sync, so nothing written before this open is read again.)
        wal.write_offset = block_up(wal.write_offset);
        if wal.write_offset + RECORD_HEADER as u64 > capacity {
            wal.write_offset = DATA_START;
        }
        if replay.is_empty() && read_header(&wal.files.buffered, capacity)?.is_none() {
            wal.write_header()?;
        }
        Ok((wal, replay))
    }

    /// Reads the records after the checkpoint, leaving `write_offset`/`last_written_seq` after
    /// the last.
    /// Anything but the next record mid-block is the padding after a batch: reading goes on
    /// at the next block, and stops there unless the next record is found.
    fn read_after_checkpoint(&mut self) -> io::Result<Vec<Vec<u8>>> {
        let mut records = Vec::new();
        let mut at = self.checkpoint_offset;
        let mut expected = self.checkpoint_seq + 1;
        let mut end = at;
        // At most one full lap.
        let mut travelled = 0u64;
        while travelled < self.capacity {
            if at + RECORD_HEADER as u64 > self.capacity {
                travelled += self.capacity - at;
                at = DATA_START;
                continue;
            }
            match self.record_at(at, expected)? {
                Found::Record(payload) => {
                    let len = (RECORD_HEADER + payload.len()) as u64;
                    records.push(payload);
                    at += len;
                    travelled += len;
                    end = at;
                    expected += 1;
                }
                Found::EndOfRing => {
                    travelled += self.capacity - at;
                    at = DATA_START;
                }
                Found::Other if at % BLOCK as u64 != 0 => {
                    let next = block_up(at);
                    travelled += next - at;
                    at = next;
                }
                Found::Other => break,
            }
        }
        self.write_offset = end;
        self.last_written_seq = expected - 1;
        Ok(records)
    }

    /// What is at `at`: the record numbered `expected`, the end-of-ring marker, or neither.
    fn record_at(&self, at: u64, expected: u64) -> io::Result<Found> {
        let mut head = [0u8; RECORD_HEADER];
        self.files.buffered.read_exact_at(&mut head, at)?;
        let magic = u32::from_le_bytes([head[0], head[1], head[2], head[3]]);
        if magic == PAD_MAGIC {
            return Ok(Found::EndOfRing);
        }
        if magic != RECORD_MAGIC {
            return Ok(Found::Other);
        }
        let len = u32::from_le_bytes([head[4], head[5], head[6], head[7]]) as usize;
        let seq = u64::from_le_bytes(head[8..16].try_into().unwrap_or_default());
        let crc = u32::from_le_bytes([head[16], head[17], head[18], head[19]]);
        if seq != expected || len > MAX_PAYLOAD || at + (RECORD_HEADER + len) as u64 > self.capacity
        {
            return Ok(Found::Other);
        }
        let mut payload = vec![0u8; len];
        self.files
            .buffered
            .read_exact_at(&mut payload, at + RECORD_HEADER as u64)?;
        if record_crc(seq, &payload) != crc {
            return Ok(Found::Other);
        }
        Ok(Found::Record(payload))
    }

    /// Bytes the records since the checkpoint occupy, plus what `extra` more would add.
    pub fn would_use(&self, extra: usize) -> u64 {
        let used = if self.write_offset >= self.checkpoint_offset {
            self.write_offset - self.checkpoint_offset
        } else {
            (self.capacity - self.checkpoint_offset) + (self.write_offset - DATA_START)
        };
        // A batch fills whole blocks, and a wrap can waste up to one batch at the end.
        used + 2 * block_up(extra as u64)
    }

    /// Whether the payloads [`Wal::open`] returned are typed (the store's record kind first)
    /// or, from a log an earlier build wrote, all token records. Every header this build writes
    /// says typed; the store checkpoints right after replaying, before it appends anything.
    pub fn replays_typed(&self) -> bool {
        self.replays_typed
    }

    /// Bytes records may use: the ring less its header, and less a block, so the write offset
    /// never comes back to the oldest record still needed.
    pub fn capacity(&self) -> u64 {
        self.capacity - DATA_START - BLOCK as u64
    }

    /// Places `records` (whole records from [`Pending::take`], in order) at the next block
    /// boundary and returns the [`Commit`] that writes them outside the log's lock. With no
    /// records, the commit only waits for the batches placed before. The caller has made sure
    /// they fit ([`Wal::would_use`]), checkpointing first if not.
    pub fn place(&mut self, records: Vec<u8>) -> Commit {
        let mut commit = Commit {
            files: Arc::clone(&self.files),
            commits: Arc::clone(&self.commits),
            ticket: self.placed,
            records: Vec::new(),
            at: self.write_offset,
            wrap_marker: None,
            ring_end: self.capacity,
            finished: true,
        };
        if records.is_empty() {
            return commit;
        }
        let len = records.len() as u64;
        if self.write_offset + len > self.capacity {
            // Send readers back to the start, then write the batch there.
            commit.wrap_marker = Some(self.write_offset);
            self.write_offset = DATA_START;
        }
        commit.at = self.write_offset;
        self.write_offset = block_up(self.write_offset + len);
        if self.write_offset + RECORD_HEADER as u64 > self.capacity {
            // No record header fits before the end: readers go back to the start by themselves
            // (see `read_after_checkpoint`), so the next batch goes there too. This keeps the
            // write offset inside the ring, where a checkpoint header may name it.
            self.write_offset = DATA_START;
        }
        self.last_written_seq = last_seq_in(&records).unwrap_or(self.last_written_seq);
        self.placed += 1;
        commit.ticket = self.placed;
        commit.records = records;
        commit.finished = false;
        commit
    }

    /// Places `records` and completes the commit at once.
    #[cfg(test)]
    pub fn write(&mut self, records: &[u8]) -> io::Result<()> {
        self.place(records.to_vec()).complete()
    }

    /// Sequence number of the last record placed (or replayed, or checkpointed); its batch may
    /// still be in flight.
    pub fn last_seq(&self) -> u64 {
        self.last_written_seq
    }

    /// Records that every record up to `last_seq` (written or not) is now held durably
    /// elsewhere (sled was flushed while no record could be appended), so their space can be
    /// reused; records not yet written must then be dropped by the caller.
    ///
    /// Waits for the batches in flight first, so none still writes into the space this frees.
    /// Earlier failed batches no longer fail the syncs that wait for them: their records are
    /// among those now held elsewhere.
    pub fn checkpoint(&mut self, last_seq: u64) -> io::Result<()> {
        drop(self.commits.wait_finished(self.placed));
        let offset = self.write_offset;
        write_header_at(&self.files.header, last_seq, offset)?;
        // Only once the header is durable does the log move on.
        self.checkpoint_seq = last_seq;
        self.last_written_seq = last_seq;
        self.checkpoint_offset = offset;
        self.commits.forgive();
        Ok(())
    }

    /// Where the log ends now. Once sled has been flushed *after* this was taken, every record
    /// up to the mark is held by sled and [`Wal::checkpoint_at`] may forget it, while records
    /// written meanwhile stay in the log after the mark.
    pub fn mark(&self) -> Mark {
        Mark {
            seq: self.last_written_seq,
            offset: self.write_offset,
            ticket: self.placed,
        }
    }

    /// Records a checkpoint at `mark` (a fuzzy checkpoint: writes went on during the flush).
    /// A checkpoint taken since that already covers the mark makes this a no-op.
    /// Batches placed before the mark are waited for (in practice long finished: the flush
    /// took longer), so none still writes into the space the checkpoint frees.
    pub fn checkpoint_at(&mut self, mark: Mark) -> io::Result<()> {
        if mark.seq <= self.checkpoint_seq {
            return Ok(());
        }
        drop(self.commits.wait_finished(mark.ticket));
        write_header_at(&self.files.header, mark.seq, mark.offset)?;
        self.checkpoint_seq = mark.seq;
        self.checkpoint_offset = mark.offset;
        Ok(())
    }

    fn write_header(&self) -> io::Result<()> {
        write_header_at(
            &self.files.header,
            self.checkpoint_seq,
            self.checkpoint_offset,
        )
    }
}

fn write_header_at(file: &File, seq: u64, offset: u64) -> io::Result<()> {
    let mut block = [0u8; 24];
    block[0..4].copy_from_slice(&HEADER_MAGIC.to_le_bytes());
    block[4..12].copy_from_slice(&seq.to_le_bytes());
    block[12..20].copy_from_slice(&offset.to_le_bytes());
    let crc = crc32fast::hash(&block[0..20]);
    block[20..24].copy_from_slice(&crc.to_le_bytes());
    file.write_all_at(&block, 0)?;
    file.sync_data()
}

/// Whether the first record slot is still zero (no record was ever written).
fn never_written(file: &File) -> io::Result<bool> {
    let mut head = [0u8; RECORD_HEADER];
    file.read_exact_at(&mut head, DATA_START)?;
    Ok(head.iter().all(|b| *b == 0))
}

/// The header's checkpoint sequence number and offset, and whether the records it heads carry
/// typed payloads; `None` if there is no valid header.
fn read_header(file: &File, capacity: u64) -> io::Result<Option<(u64, u64, bool)>> {
    let mut block = [0u8; 24];
    file.read_exact_at(&mut block, 0)?;
    let magic = u32::from_le_bytes([block[0], block[1], block[2], block[3]]);
    let crc = u32::from_le_bytes([block[20], block[21], block[22], block[23]]);
    let known = [HEADER_MAGIC, HEADER_MAGIC_V2, HEADER_MAGIC_V1].contains(&magic);
    if !known || crc32fast::hash(&block[0..20]) != crc {
        return Ok(None);
    }
    let seq = u64::from_le_bytes(block[4..12].try_into().unwrap_or_default());
    let offset = u64::from_le_bytes(block[12..20].try_into().unwrap_or_default());
    if !(DATA_START..capacity).contains(&offset) {
        return Ok(None);
    }
    Ok(Some((seq, offset, magic == HEADER_MAGIC)))
}

/// Sequence number of the last record in a run of whole records.
fn last_seq_in(records: &[u8]) -> Option<u64> {
    let mut at = 0usize;
    let mut last = None;
    while let Some(head) = records.get(at..at + RECORD_HEADER) {
        let len = u32::from_le_bytes([head[4], head[5], head[6], head[7]]) as usize;
        last = Some(u64::from_le_bytes(head[8..16].try_into().ok()?));
        at += RECORD_HEADER + len;
    }
    last
}

/// What a reader finds at an offset.
enum Found {
    Record(Vec<u8>),
    EndOfRing,
    Other,
}

fn record_crc(seq: u64, payload: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&seq.to_le_bytes());
    hasher.update(payload);
    hasher.finalize()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMALL: u64 = DATA_START + 1024;

    /// A new, empty log of `SMALL * 16` octets in a temporary directory (kept alive by the
    /// first element).
    fn fresh() -> (tempfile::TempDir, std::path::PathBuf, Wal) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("wal");
        let (wal, replay) = Wal::open(&path, SMALL * 16).expect("open");
        assert!(replay.is_empty());
        (dir, path, wal)
    }

    fn write_records(wal: &mut Wal, payloads: &[&[u8]]) {
        let mut pending = Pending::after(wal.last_seq());
        for p in payloads {
            pending.append(&[p]);
        }
        wal.write(&pending.take()).expect("write");
    }

    #[test]
    fn records_after_checkpoint_are_replayed_in_order() {
        let (_dir, path, mut wal) = fresh();
        write_records(&mut wal, &[b"one", b"two"]);
        wal.checkpoint(wal.last_seq()).expect("checkpoint");
        write_records(&mut wal, &[b"three", b"four"]);
        drop(wal);
        let (wal, replay) = Wal::open(&path, SMALL * 16).expect("reopen");
        assert_eq!(replay, vec![b"three".to_vec(), b"four".to_vec()]);
        assert_eq!(wal.last_seq(), 4);
    }

    #[test]
    fn torn_tail_stops_the_replay() {
        let (_dir, path, mut wal) = fresh();
        write_records(&mut wal, &[b"kept", b"torn"]);
        // Corrupt the last payload byte of the second record.
        let second_end = DATA_START + 2 * RECORD_HEADER as u64 + 8;
        wal.files
            .buffered
            .write_all_at(b"X", second_end - 1)
            .expect("corrupt");
        drop(wal);
        let (mut wal, replay) = Wal::open(&path, SMALL * 16).expect("reopen");
        assert_eq!(replay, vec![b"kept".to_vec()]);
        // Writing continues after the last good record, at the next block.
        write_records(&mut wal, &[b"next"]);
        drop(wal);
        let (_, replay) = Wal::open(&path, SMALL * 16).expect("reopen");
        assert_eq!(replay, vec![b"kept".to_vec(), b"next".to_vec()]);
    }

    #[test]
    fn ring_wraps_and_keeps_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("wal");
        let capacity = DATA_START * 8;
        let (mut wal, _) = Wal::open(&path, capacity).expect("open");
        for round in 0..60u8 {
            let mut pending = Pending::after(wal.last_seq());
            pending.append(&[&[round; 900]]);
            assert!(
                wal.would_use(pending.len()) < wal.capacity(),
                "round {round}"
            );
            wal.write(&pending.take()).expect("write");
            if round % 3 == 2 {
                wal.checkpoint(wal.last_seq()).expect("checkpoint");
            }
        }
        // Rounds up to 59 were checkpointed; two more must replay, across wraps.
        write_records(&mut wal, &[&[200u8; 900], &[201u8; 900]]);
        let last = wal.last_seq();
        drop(wal);
        let (wal, replay) = Wal::open(&path, capacity).expect("reopen");
        assert_eq!(replay, vec![vec![200u8; 900], vec![201u8; 900]]);
        assert_eq!(wal.last_seq(), last);
    }

    #[test]
    fn damaged_header_with_records_is_refused_and_size_change_too() {
        let (dir, path, mut wal) = fresh();
        write_records(&mut wal, &[b"one"]);
        wal.files
            .buffered
            .write_all_at(&[0xff; 8], 4)
            .expect("damage header");
        drop(wal);
        assert!(Wal::open(&path, SMALL * 16).is_err(), "damaged header");
        let other = dir.path().join("other");
        drop(Wal::open(&other, SMALL * 16).expect("create"));
        assert!(Wal::open(&other, SMALL * 32).is_err(), "size changed");
    }

    #[test]
    fn checkpoint_covers_records_never_written() {
        let (_dir, path, mut wal) = fresh();
        let mut pending = Pending::after(wal.last_seq());
        pending.append(&[b"held by sled already"]);
        wal.checkpoint(pending.last_seq()).expect("checkpoint");
        pending.clear();
        pending.append(&[b"after"]);
        wal.write(&pending.take()).expect("write");
        drop(wal);
        let (_, replay) = Wal::open(&path, SMALL * 16).expect("reopen");
        assert_eq!(replay, vec![b"after".to_vec()]);
    }

    #[test]
    fn fuzzy_checkpoint_keeps_what_was_written_after_its_mark() {
        let (_dir, path, mut wal) = fresh();
        write_records(&mut wal, &[b"before one", b"before two"]);
        let mark = wal.mark();
        // Written while sled flushes: not covered by the flush, so kept.
        write_records(&mut wal, &[b"during"]);
        wal.checkpoint_at(mark).expect("checkpoint");
        write_records(&mut wal, &[b"after"]);
        // A stale mark never moves the checkpoint back.
        wal.checkpoint_at(mark).expect("no-op");
        drop(wal);
        let (mut wal, replay) = Wal::open(&path, SMALL * 16).expect("reopen");
        assert_eq!(replay, vec![b"during".to_vec(), b"after".to_vec()]);
        wal.checkpoint(wal.last_seq()).expect("full checkpoint");
        wal.checkpoint_at(mark)
            .expect("older than the checkpoint: no-op");
        drop(wal);
        assert!(Wal::open(&path, SMALL * 16).expect("reopen").1.is_empty());
    }

    #[test]
    fn a_write_ending_near_the_end_of_the_ring_leaves_a_checkpointable_offset() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("wal");
        let capacity = SMALL * 4;
        let (mut wal, _) = Wal::open(&path, capacity).expect("open");
        // One record that ends exactly at the end of the ring.
        let room = usize::try_from(capacity - DATA_START).expect("fits") - RECORD_HEADER;
        write_records(&mut wal, &[&vec![7u8; room]]);
        assert_eq!(
            wal.mark().offset,
            DATA_START,
            "next record goes to the start"
        );
        wal.checkpoint(wal.last_seq()).expect("checkpoint");
        write_records(&mut wal, &[b"wrapped"]);
        drop(wal);
        assert_eq!(std::fs::metadata(&path).expect("stat").len(), capacity);
        let (_, replay) = Wal::open(&path, capacity).expect("header names a valid offset");
        assert_eq!(replay, vec![b"wrapped".to_vec()]);
    }

    #[test]
    fn writes_resume_after_reopen_and_keep_the_file_size() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("wal");
        let capacity = SMALL * 16;
        let mut expected = Vec::new();
        for round in 0..6u8 {
            let (mut wal, replay) = Wal::open(&path, capacity).expect("open");
            assert_eq!(replay, expected, "round {round}");
            // Odd sizes, so batches end mid-block and the next open resumes at the next block.
            let batch: Vec<Vec<u8>> = (0..3).map(|i| vec![round; 37 + 101 * i]).collect();
            let refs: Vec<&[u8]> = batch.iter().map(Vec::as_slice).collect();
            write_records(&mut wal, &refs);
            expected.extend(batch);
        }
        assert_eq!(std::fs::metadata(&path).expect("stat").len(), capacity);
    }

    #[test]
    fn batches_written_through_the_page_cache_then_directly_replay_in_order() {
        let (_dir, path, mut wal) = fresh();
        // As on a filesystem that refuses O_DIRECT.
        wal.files.direct_refused.store(true, Ordering::Relaxed);
        write_records(&mut wal, &[b"buffered"]);
        drop(wal);
        // The next process may write directly, after the block written buffered.
        let (mut wal, replay) = Wal::open(&path, SMALL * 16).expect("reopen");
        assert_eq!(replay, vec![b"buffered".to_vec()]);
        write_records(&mut wal, &[b"direct"]);
        drop(wal);
        let (_, replay) = Wal::open(&path, SMALL * 16).expect("reopen");
        assert_eq!(replay, vec![b"buffered".to_vec(), b"direct".to_vec()]);
    }

    #[test]
    fn batches_finishing_out_of_order_are_durable_in_order() {
        let (_dir, path, mut wal) = fresh();
        let mut pending = Pending::after(wal.last_seq());
        pending.append(&[b"first"]);
        let first = wal.place(pending.take());
        pending.append(&[b"second"]);
        let second = wal.place(pending.take());
        // Nothing of its own: waits for both.
        let neither = wal.place(Vec::new());
        let (tx, rx) = std::sync::mpsc::channel();
        let waiters: Vec<_> = [second, neither]
            .into_iter()
            .map(|commit| {
                let tx = tx.clone();
                std::thread::spawn(move || {
                    let result = commit.complete();
                    tx.send(()).expect("send");
                    result
                })
            })
            .collect();
        // The second batch is written, but its sync must wait for the first.
        assert!(rx
            .recv_timeout(std::time::Duration::from_millis(200))
            .is_err());
        first.complete().expect("first");
        for waiter in waiters {
            waiter.join().expect("join").expect("durable");
        }
        drop(wal);
        let (_, replay) = Wal::open(&path, SMALL * 16).expect("reopen");
        assert_eq!(replay, vec![b"first".to_vec(), b"second".to_vec()]);
    }

    #[test]
    fn a_batch_written_after_a_hole_is_not_replayed() {
        let (_dir, path, mut wal) = fresh();
        write_records(&mut wal, &[b"durable"]);
        let mut pending = Pending::after(wal.last_seq());
        pending.append(&[b"never written"]);
        let _lost = wal.place(pending.take());
        pending.append(&[b"written, never acknowledged"]);
        wal.place(pending.take()).write().expect("write");
        // A crash here: the second batch is on disk, the first is not.
        drop(wal);
        let (wal, replay) = Wal::open(&path, SMALL * 16).expect("reopen");
        assert_eq!(replay, vec![b"durable".to_vec()]);
        assert_eq!(wal.last_seq(), 1);
    }

    #[test]
    fn a_failed_batch_fails_the_syncs_after_it_until_a_checkpoint() {
        let commits = Commits::default();
        commits.finish(2, true);
        commits.finish(1, false);
        assert!(commits.wait(1).is_err());
        assert!(commits.wait(2).is_err(), "replay would stop at batch 1");
        commits.forgive();
        commits.finish(3, true);
        assert!(commits.wait(3).is_ok());
    }

    #[test]
    fn each_batch_starts_on_a_block() {
        let (_dir, _, mut wal) = fresh();
        write_records(&mut wal, &[b"a"]);
        assert_eq!(wal.mark().offset, DATA_START + BLOCK as u64);
        write_records(&mut wal, &[&[1u8; BLOCK]]);
        assert_eq!(wal.mark().offset, DATA_START + 3 * BLOCK as u64);
    }

    #[test]
    fn a_commit_dropped_unfinished_fails_the_syncs_after_it() {
        let (_dir, _, mut wal) = fresh();
        let mut pending = Pending::after(wal.last_seq());
        pending.append(&[b"lost"]);
        drop(wal.place(pending.take()));
        pending.append(&[b"after the hole"]);
        let later = wal.place(pending.take());
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || tx.send(later.complete().is_ok()));
        let ok = rx
            .recv_timeout(std::time::Duration::from_secs(5))
            .expect("a later sync must not wait forever");
        assert!(!ok, "replay would stop at the hole");
        // A checkpoint covers both (their writes are in sled), and syncs succeed again.
        wal.checkpoint(pending.last_seq()).expect("checkpoint");
        pending.clear();
        write_records(&mut wal, &[b"fine"]);
    }

    #[test]
    fn the_header_says_which_layout_and_the_earlier_one_is_still_read() {
        let (_dir, path, mut wal) = fresh();
        let mut magic = [0u8; 4];
        wal.files.header.read_exact_at(&mut magic, 0).expect("read");
        assert_eq!(u32::from_le_bytes(magic), HEADER_MAGIC);
        write_records(&mut wal, &[b"one", b"two"]);
        // The same header as the earlier layout wrote it (records back to back read alike).
        let mut block = [0u8; 24];
        block[0..4].copy_from_slice(&HEADER_MAGIC_V1.to_le_bytes());
        block[12..20].copy_from_slice(&DATA_START.to_le_bytes());
        let crc = crc32fast::hash(&block[0..20]);
        block[20..24].copy_from_slice(&crc.to_le_bytes());
        wal.files.header.write_all_at(&block, 0).expect("write");
        drop(wal);
        let (wal, replay) = Wal::open(&path, SMALL * 16).expect("reopen");
        assert_eq!(replay, vec![b"one".to_vec(), b"two".to_vec()]);
        assert!(
            !wal.replays_typed(),
            "an earlier layout's payloads are untyped"
        );
        // The layout before typed payloads (batches on block boundaries), likewise.
        block[0..4].copy_from_slice(&HEADER_MAGIC_V2.to_le_bytes());
        let crc = crc32fast::hash(&block[0..20]);
        block[20..24].copy_from_slice(&crc.to_le_bytes());
        wal.files.header.write_all_at(&block, 0).expect("write");
        drop(wal);
        let (wal, replay) = Wal::open(&path, SMALL * 16).expect("reopen");
        assert_eq!(replay.len(), 2);
        assert!(!wal.replays_typed());
        // Once checkpointed by this build, the header says typed.
        let mut wal = wal;
        wal.checkpoint(wal.last_seq()).expect("checkpoint");
        drop(wal);
        let (wal, replay) = Wal::open(&path, SMALL * 16).expect("reopen");
        assert!(replay.is_empty());
        assert!(wal.replays_typed());
    }
}
