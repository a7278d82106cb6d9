//! The data area: file data cut into blocks and compressed in parallel (a reading thread,
//! compressing workers and a writing thread, with a bounded pool of buffers), file tails
//! packed into fragment blocks, all-zero blocks left sparse.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::sync::mpsc::{self, Receiver, Sender, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread;

use super::{compress, compressor, write_at, Error, BLOCK_SIZE};
use crate::format::squashfs::layout::BLOCK_UNCOMPRESSED;
use crate::tree::{Content, Kind, NodeId, Tree, TreeError};

/// Where a regular file's data went.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct FileData {
    /// Location of the first block (0 without blocks).
    pub(super) start: u64,
    /// Size word of every full block: on-disk size, [`BLOCK_UNCOMPRESSED`], 0 if sparse.
    pub(super) blocks: Vec<u32>,
    /// Fragment block index and offset of the tail.
    pub(super) fragment: Option<(u32, u32)>,
    /// Bytes not stored because their blocks are all zero.
    pub(super) sparse: u64,
}

/// A block placed in the image: its location and size word.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Placed {
    pub(super) pos: u64,
    pub(super) word: u32,
}

/// The data area: every file's data (by the node holding the inode), the fragment blocks,
/// and where the area ends.
#[derive(Debug)]
pub(super) struct Data {
    pub(super) files: HashMap<NodeId, FileData>,
    pub(super) fragments: Vec<Placed>,
    pub(super) end: u64,
}

/// A regular file whose data goes into the image (one per hard-link group).
struct Source<'a> {
    id: NodeId,
    content: &'a Content,
    size: u64,
}

/// Regular files in canonical order, each hard-link group once.
fn sources(tree: &Tree) -> Vec<Source<'_>> {
    tree.walk()
        .into_iter()
        .filter_map(|id| match &tree.nodes[id].kind {
            Kind::File { content, size } if tree.nodes[id].hardlink_of.is_none() => Some(Source {
                id,
                content,
                size: *size,
            }),
            _ => None,
        })
        .collect()
}

/// A block to compress, numbered in image order.
struct Job {
    seq: usize,
    data: Vec<u8>,
    /// A full file block (not a fragment), which may be stored as sparse.
    may_be_sparse: bool,
}

enum Packed {
    Sparse,
    Raw,
    Zstd(Vec<u8>),
}

struct Done {
    seq: usize,
    data: Vec<u8>,
    packed: Packed,
}

/// Writes all file data from `start` (relative to the filesystem at `offset` of `out`).
pub(super) fn write_data(
    tree: &Tree,
    out: &File,
    offset: u64,
    start: u64,
    level: i32,
) -> Result<Data, Error> {
    let sources = sources(tree);
    let workers = thread::available_parallelism().map_or(1, usize::from);
    let buffers = 4 * workers;
    let (job_tx, job_rx) = mpsc::sync_channel(buffers);
    let (done_tx, done_rx) = mpsc::channel();
    let (free_tx, free_rx) = mpsc::sync_channel(buffers);
    let jobs = Arc::new(Mutex::new(job_rx));
    thread::scope(|s| {
        let compressing: Vec<_> = (0..workers)
            .map(|_| {
                let (jobs, done) = (Arc::clone(&jobs), done_tx.clone());
                s.spawn(move || compress_blocks(&jobs, &done, level))
            })
            .collect();
        drop((jobs, done_tx));
        let writer = s.spawn(move || place_blocks(out, offset, start, done_rx, &free_tx));
        let mut reader = Reader {
            tree,
            jobs: job_tx,
            free: free_rx,
            unallocated: buffers,
            seq: 0,
            fragment: Vec::with_capacity(BLOCK_SIZE),
            fragment_seqs: Vec::new(),
        };
        let read = reader.read_all(&sources);
        let fragment_seqs = std::mem::take(&mut reader.fragment_seqs);
        drop(reader);
        compressing.into_iter().for_each(join);
        let (placed, end) = join(writer)?;
        assemble(&sources, &read?, &fragment_seqs, &placed, end)
    })
}

fn join<T>(handle: thread::ScopedJoinHandle<'_, T>) -> T {
    handle
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

/// Combines where the reader put each file (in sequence numbers) with where the writer put
/// each sequence number.
fn assemble(
    sources: &[Source],
    slots: &[Slots],
    fragment_seqs: &[usize],
    placed: &[Placed],
    end: u64,
) -> Result<Data, Error> {
    let lost = || Error::Internal("a data block was not written");
    let mut files = HashMap::with_capacity(sources.len());
    for (src, slot) in sources.iter().zip(slots) {
        let mut start = None;
        let mut blocks = Vec::with_capacity(slot.blocks.len());
        for &seq in &slot.blocks {
            let word = match seq {
                Some(seq) => {
                    let block = placed.get(seq).ok_or_else(lost)?;
                    start.get_or_insert(block.pos);
                    block.word
                }
                None => 0,
            };
            blocks.push(word);
        }
        let sparse = blocks.iter().filter(|&&word| word == 0).count();
        let data = FileData {
            start: start.unwrap_or(0),
            blocks,
            fragment: slot.fragment,
            sparse: (sparse * BLOCK_SIZE) as u64,
        };
        files.insert(src.id, data);
    }
    let fragments = fragment_seqs
        .iter()
        .map(|&seq| placed.get(seq).copied().ok_or_else(lost))
        .collect::<Result<_, _>>()?;
    Ok(Data {
        files,
        fragments,
        end,
    })
}

/// Tells the writer when a compression worker unwinds, so that the pipeline stops (and the
/// panic propagates) instead of waiting for the block the worker lost.
struct PanicGuard<'a>(&'a Sender<Result<Done, Error>>);

impl Drop for PanicGuard<'_> {
    fn drop(&mut self) {
        if thread::panicking() {
            let _ = self
                .0
                .send(Err(Error::Internal("a compression worker panicked")));
        }
    }
}

/// Compresses jobs until the job channel closes. A failure goes to the writer, which then
/// stops, and with it the whole pipeline.
fn compress_blocks(jobs: &Mutex<Receiver<Job>>, done: &Sender<Result<Done, Error>>, level: i32) {
    let _guard = PanicGuard(done);
    let mut zstd = match compressor(level) {
        Ok(zstd) => zstd,
        Err(e) => {
            let _ = done.send(Err(e));
            return;
        }
    };
    loop {
        let next = match jobs.lock() {
            Ok(rx) => rx.recv(),
            Err(_) => return,
        };
        let Ok(job) = next else { return };
        let packed = if job.may_be_sparse && is_zero(&job.data) {
            Ok(Packed::Sparse)
        } else {
            compress(&mut zstd, &job.data).map(|c| c.map_or(Packed::Raw, Packed::Zstd))
        };
        let block = packed.map(|packed| Done {
            seq: job.seq,
            data: job.data,
            packed,
        });
        let failed = block.is_err();
        if done.send(block).is_err() || failed {
            return;
        }
    }
}

/// A block of zeros to compare with (in .bss, so it costs no file size).
static ZEROES: [u8; BLOCK_SIZE] = [0; BLOCK_SIZE];

/// All bytes zero (compared with `memcmp`, fast even in unoptimised builds).
fn is_zero(data: &[u8]) -> bool {
    ZEROES
        .get(..data.len())
        .is_some_and(|zeroes| zeroes == data)
}

/// Writes compressed blocks in sequence order from `start`, returning each block's place and
/// the end of the data area; buffers go back to the reader through `free`.
fn place_blocks(
    out: &File,
    offset: u64,
    start: u64,
    done: Receiver<Result<Done, Error>>,
    free: &SyncSender<Vec<u8>>,
) -> Result<(Vec<Placed>, u64), Error> {
    let mut waiting = BTreeMap::new();
    let mut placed = Vec::new();
    let mut pos = start;
    for block in done {
        let block = block?;
        waiting.insert(block.seq, block);
        while let Some(block) = waiting.remove(&placed.len()) {
            let (bytes, word) = match &block.packed {
                Packed::Sparse => (&[][..], 0),
                Packed::Raw => (
                    &block.data[..],
                    block.data.len() as u32 | BLOCK_UNCOMPRESSED,
                ),
                Packed::Zstd(packed) => (&packed[..], packed.len() as u32),
            };
            write_at(out, offset + pos, bytes)?;
            placed.push(Placed { pos, word });
            pos += bytes.len() as u64;
            // Fails only once the reader has stopped and needs no more buffers.
            let _ = free.try_send(block.data);
        }
    }
    Ok((placed, pos))
}

/// Where the reader sent a file's data: the sequence number of each full block (none for a
/// hole, which is not read), and the fragment block index and offset of its tail.
struct Slots {
    blocks: Vec<Option<usize>>,
    fragment: Option<(u32, u32)>,
}

/// A file's content, read in order. Files on disk are read by position and skip holes
/// (`SEEK_DATA`) rather than read their zeros.
enum Input<'a> {
    File {
        file: File,
        pos: u64,
        /// No data before this offset, from `pos` on.
        data_from: u64,
    },
    Stream(Box<dyn Read + 'a>),
}

impl<'a> Input<'a> {
    fn open(content: &'a Content) -> Result<Input<'a>, Error> {
        match content {
            Content::Path(path) => match File::open(path) {
                Ok(file) => Ok(Input::File {
                    file,
                    pos: 0,
                    data_from: 0,
                }),
                Err(source) => Err(TreeError::Io {
                    path: path.clone(),
                    source,
                }
                .into()),
            },
            Content::Bytes(_) => Ok(Input::Stream(content.open()?)),
        }
    }

    /// Skips the next `len` bytes if they are a hole; says whether it did.
    fn skip_hole(&mut self, len: u64) -> bool {
        let Input::File {
            file,
            pos,
            data_from,
        } = self
        else {
            return false;
        };
        if *pos + len > *data_from {
            *data_from = match rustix::fs::seek(&*file, rustix::fs::SeekFrom::Data(*pos)) {
                Ok(next) => next,
                // No data after `pos`.
                Err(rustix::io::Errno::NXIO) => u64::MAX,
                // No hole information: read everything.
                Err(_) => return false,
            };
        }
        let hole = *pos + len <= *data_from;
        if hole {
            *pos += len;
        }
        hole
    }
}

impl Read for Input<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Input::File { file, pos, .. } => {
                let n = file.read_at(buf, *pos)?;
                *pos += n as u64;
                Ok(n)
            }
            Input::Stream(stream) => stream.read(buf),
        }
    }
}

/// Reads file data into pooled buffers and sends it to the compressors, packing tails into
/// fragment blocks.
struct Reader<'a> {
    tree: &'a Tree,
    jobs: SyncSender<Job>,
    free: Receiver<Vec<u8>>,
    /// Buffers that may still be allocated before waiting for recycled ones.
    unallocated: usize,
    seq: usize,
    /// The fragment block being filled.
    fragment: Vec<u8>,
    /// Sequence number of every fragment block sent.
    fragment_seqs: Vec<usize>,
}

impl Reader<'_> {
    fn read_all(&mut self, sources: &[Source]) -> Result<Vec<Slots>, Error> {
        let slots = sources
            .iter()
            .map(|src| self.read_file(src))
            .collect::<Result<_, _>>()?;
        self.flush_fragment()?;
        Ok(slots)
    }

    fn read_file(&mut self, src: &Source) -> Result<Slots, Error> {
        let mut input = Input::open(src.content)?;
        let count = src.size / BLOCK_SIZE as u64;
        let mut blocks = Vec::with_capacity(count as usize);
        for _ in 0..count {
            if input.skip_hole(BLOCK_SIZE as u64) {
                blocks.push(None);
                continue;
            }
            let mut buf = self.buffer()?;
            self.fill(src, &mut input, &mut buf)?;
            blocks.push(Some(self.submit(buf, true)?));
        }
        let tail = (src.size % BLOCK_SIZE as u64) as usize;
        let fragment = if tail == 0 {
            None
        } else {
            Some(self.read_tail(src, &mut input, tail)?)
        };
        self.expect_end(src, &mut input)?;
        Ok(Slots { blocks, fragment })
    }

    /// Appends a file's tail to the fragment block, starting a new one if it does not fit.
    fn read_tail(
        &mut self,
        src: &Source,
        input: &mut dyn Read,
        len: usize,
    ) -> Result<(u32, u32), Error> {
        if self.fragment.len() + len > BLOCK_SIZE {
            self.flush_fragment()?;
        }
        let at = self.fragment.len();
        // Reads into spare capacity, without zeroing it first.
        let read = input.take(len as u64).read_to_end(&mut self.fragment);
        match read {
            Ok(n) if n == len => Ok((self.fragment_seqs.len() as u32, at as u32)),
            Ok(_) => Err(self.read_error(src, io::ErrorKind::UnexpectedEof.into())),
            Err(e) => Err(self.read_error(src, e)),
        }
    }

    fn flush_fragment(&mut self) -> Result<(), Error> {
        if self.fragment.is_empty() {
            return Ok(());
        }
        let mut next = self.buffer()?;
        next.clear();
        let full = std::mem::replace(&mut self.fragment, next);
        let seq = self.submit(full, false)?;
        self.fragment_seqs.push(seq);
        Ok(())
    }

    /// A block-sized buffer, new or recycled.
    fn buffer(&mut self) -> Result<Vec<u8>, Error> {
        if self.unallocated > 0 {
            self.unallocated -= 1;
            return Ok(vec![0; BLOCK_SIZE]);
        }
        let mut buf = self.free.recv().map_err(|_| stopped())?;
        // Only fragment blocks come back shorter.
        buf.resize(BLOCK_SIZE, 0);
        Ok(buf)
    }

    fn submit(&mut self, data: Vec<u8>, may_be_sparse: bool) -> Result<usize, Error> {
        let seq = self.seq;
        self.seq += 1;
        let job = Job {
            seq,
            data,
            may_be_sparse,
        };
        self.jobs.send(job).map_err(|_| stopped())?;
        Ok(seq)
    }

    fn fill(&self, src: &Source, input: &mut dyn Read, buf: &mut [u8]) -> Result<(), Error> {
        input.read_exact(buf).map_err(|e| self.read_error(src, e))
    }

    /// Fails if the file's size is not what it was when scanned.
    fn expect_end(&self, src: &Source, input: &mut Input) -> Result<(), Error> {
        let eof = || io::Error::from(io::ErrorKind::UnexpectedEof);
        if let Input::File { file, .. } = input {
            return match file.metadata() {
                Ok(md) if md.len() == src.size => Ok(()),
                Ok(_) => Err(self.read_error(src, eof())),
                Err(e) => Err(self.read_error(src, e)),
            };
        }
        let mut probe = [0; 1];
        loop {
            match input.read(&mut probe) {
                Ok(0) => return Ok(()),
                Ok(_) => return Err(self.read_error(src, eof())),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(self.read_error(src, e)),
            }
        }
    }

    /// A read error naming the source file; an early or late end of file means it changed.
    fn read_error(&self, src: &Source, source: io::Error) -> Error {
        let path = match src.content {
            Content::Path(p) => p.clone(),
            Content::Bytes(_) => self.tree.path(src.id),
        };
        if source.kind() == io::ErrorKind::UnexpectedEof {
            Error::SizeChanged {
                path,
                expected: src.size,
            }
        } else {
            Error::Read { path, source }
        }
    }
}

/// The reader's error when the compressors or the writer stopped; theirs is reported instead.
fn stopped() -> Error {
    Error::Internal("the compression pipeline stopped")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::squashfs::test_util::{bytes, file_meta, noise, text};

    #[test]
    fn data_blocks_sparse_raw_compressed_and_fragments() {
        let m = file_meta(0o644);
        let mut t = Tree::new(m.clone());
        let mut mixed = vec![0; BLOCK_SIZE];
        mixed.extend(noise(BLOCK_SIZE, 3));
        mixed.extend(text(BLOCK_SIZE + 5));
        let a = t.insert("a", m.clone(), bytes(&mixed), &m).unwrap();
        let b = t.insert("b", m.clone(), bytes(b"0123456789"), &m).unwrap();
        let c = t
            .insert("c", m.clone(), bytes(&noise(BLOCK_SIZE - 8, 4)), &m)
            .unwrap();
        let empty = t.insert("d", m.clone(), bytes(b""), &m).unwrap();
        let out = tempfile::tempfile().unwrap();
        let data = write_data(&t, &out, 10, 100, 3).unwrap();

        let fa = &data.files[&a];
        assert_eq!(fa.blocks.len(), 3);
        assert_eq!(fa.blocks[0], 0, "an all-zero block is sparse");
        assert_eq!(fa.blocks[1], BLOCK_SIZE as u32 | BLOCK_UNCOMPRESSED);
        assert!(fa.blocks[2] < BLOCK_SIZE as u32 / 4);
        assert_eq!(
            (fa.start, fa.sparse, fa.fragment),
            (100, BLOCK_SIZE as u64, Some((0, 0)))
        );
        assert_eq!(data.files[&b].fragment, Some((0, 5)));
        assert!(data.files[&b].blocks.is_empty());
        // A tail that does not fit starts the next fragment block.
        assert_eq!(data.files[&c].fragment, Some((1, 0)));
        assert_eq!(data.files[&empty], FileData::default());
        assert_eq!(data.fragments.len(), 2);

        let read = |pos: u64, word: u32| {
            let mut buf = vec![0; (word & !BLOCK_UNCOMPRESSED) as usize];
            out.read_exact_at(&mut buf, 10 + pos).unwrap();
            match word & BLOCK_UNCOMPRESSED {
                0 => zstd::bulk::decompress(&buf, BLOCK_SIZE).unwrap(),
                _ => buf,
            }
        };
        let mut pos = fa.start;
        for (i, &word) in fa.blocks.iter().enumerate().skip(1) {
            assert_eq!(read(pos, word), mixed[i * BLOCK_SIZE..][..BLOCK_SIZE]);
            pos += u64::from(word & !BLOCK_UNCOMPRESSED);
        }
        let first = read(data.fragments[0].pos, data.fragments[0].word);
        assert_eq!(first[..5], mixed[3 * BLOCK_SIZE..]);
        assert_eq!(first[5..], *b"0123456789");
        let second = read(data.fragments[1].pos, data.fragments[1].word);
        assert_eq!(second, noise(BLOCK_SIZE - 8, 4));
        let last = data.fragments[1];
        assert_eq!(
            data.end,
            last.pos + u64::from(last.word & !BLOCK_UNCOMPRESSED)
        );
    }
}
