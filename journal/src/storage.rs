//! Where a journal's bytes live: a file (the embedded default), or memory (tests and models).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The byte store under a [`LogJournal`](crate::LogJournal): append-only, with an atomic
/// whole-content replace for compaction.
pub trait Storage: Send {
    /// Everything stored (empty for a store that does not exist yet).
    fn read_all(&mut self) -> io::Result<Vec<u8>>;
    /// Appends bytes at the end (not yet durable: see [`Storage::syncer`]).
    fn append(&mut self, bytes: &[u8]) -> io::Result<()>;
    /// Keeps a copy of damaged content before a salvage rewrites it, so the evidence survives;
    /// returns where it went.
    fn preserve(&mut self, bytes: &[u8]) -> io::Result<Option<PathBuf>>;
    /// Replaces the whole content with `bytes`, atomically and durably: after a crash at any
    /// moment the store holds either the old content or the new.
    fn replace(&mut self, bytes: &[u8]) -> io::Result<()>;
    /// A handle that makes what was appended so far durable, usable without holding the
    /// journal's lock (so appends go on while an fsync runs: group commit).
    fn syncer(&self) -> Syncer;
}

/// Makes appended bytes durable. See [`Storage::syncer`].
#[derive(Clone, Debug)]
pub struct Syncer(SyncTarget);

#[derive(Clone, Debug)]
enum SyncTarget {
    None,
    File(Arc<File>),
    Memory(Arc<parking_lot::Mutex<MemoryImage>>),
}

impl Syncer {
    /// A syncer with nothing to do.
    pub fn none() -> Self {
        Self(SyncTarget::None)
    }

    /// Flushes the file's data to the device (`fdatasync`); for memory storage, marks what was
    /// appended so far as surviving a [`MemoryStorage::power_cut`].
    ///
    /// # Errors
    /// The operating system's error.
    pub fn sync(&self) -> io::Result<()> {
        match &self.0 {
            SyncTarget::None => Ok(()),
            SyncTarget::File(f) => f.sync_data(),
            SyncTarget::Memory(m) => {
                let mut m = m.lock();
                m.synced = m.bytes.len();
                Ok(())
            }
        }
    }
}

/// A journal file on disk.
///
/// While it is in use, it holds an exclusive lock on `<path>.lock`, so two processes cannot run
/// on one journal (they would both start the same epoch, and the later compaction would orphan
/// the other's records).
#[derive(Debug)]
pub struct FileStorage {
    path: PathBuf,
    file: Option<Arc<File>>,
    lock: Option<File>,
}

impl FileStorage {
    /// The file at `path` (created when the journal starts, if missing).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into(), file: None, lock: None }
    }

    fn sibling(&self, suffix: &str) -> PathBuf {
        let mut name = self.path.clone().into_os_string();
        name.push(suffix);
        PathBuf::from(name)
    }

    fn take_lock(&mut self) -> io::Result<()> {
        if self.lock.is_some() {
            return Ok(());
        }
        let f = OpenOptions::new().read(true).write(true).create(true).truncate(false).open(self.sibling(".lock"))?;
        match f.try_lock() {
            Ok(()) => {
                self.lock = Some(f);
                Ok(())
            }
            Err(fs::TryLockError::WouldBlock) => Err(io::Error::new(
                io::ErrorKind::WouldBlock,
                format!("another process has the journal {} open", self.path.display()),
            )),
            Err(fs::TryLockError::Error(e)) => Err(e),
        }
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn open(&mut self) -> io::Result<&Arc<File>> {
        if self.file.is_none() {
            let f = OpenOptions::new().read(true).append(true).create(true).open(&self.path)?;
            self.file = Some(Arc::new(f));
        }
        self.file.as_ref().ok_or_else(|| io::Error::other("journal file not open"))
    }

    fn sync_dir(&self) -> io::Result<()> {
        // The rename is durable only once the directory is: fsync it.
        let dir = match self.path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        File::open(dir)?.sync_all()
    }
}

impl Storage for FileStorage {
    fn read_all(&mut self) -> io::Result<Vec<u8>> {
        self.take_lock()?;
        // A compaction that crashed before its rename leaves its new file behind: unused.
        let _ = fs::remove_file(self.sibling(".compact"));
        let mut f = match File::open(&self.path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let mut out = Vec::new();
        f.seek(SeekFrom::Start(0))?;
        f.read_to_end(&mut out)?;
        Ok(out)
    }

    fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
        // `&File` implements Write; the file is in append mode, so the bytes go at the end.
        let mut f: &File = self.open()?;
        f.write_all(bytes)
    }

    fn preserve(&mut self, bytes: &[u8]) -> io::Result<Option<PathBuf>> {
        let copy = self.sibling(".damaged");
        let mut f = File::create(&copy)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        Ok(Some(copy))
    }

    fn replace(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.take_lock()?;
        let tmp = self.sibling(".compact");
        {
            let mut f = File::create(&tmp)?;
            f.write_all(bytes)?;
            f.sync_all()?;
        }
        // From the rename on, the old file is unlinked: never write to it again, even if what
        // follows fails (the caller then stops, since the rename's durability is unknown).
        self.file = None;
        fs::rename(&tmp, &self.path)?;
        self.open()?;
        self.sync_dir()
    }

    fn syncer(&self) -> Syncer {
        match &self.file {
            Some(f) => Syncer(SyncTarget::File(f.clone())),
            None => Syncer::none(),
        }
    }
}

/// Journal bytes in memory, shared between clones: a process crash is dropping the journal and
/// starting a new one on a clone of the storage (everything appended survives, as the kernel
/// keeps a killed process's writes); a power cut is [`MemoryStorage::power_cut`], which keeps
/// only what was synced.
#[derive(Clone, Debug, Default)]
pub struct MemoryStorage(Arc<parking_lot::Mutex<MemoryImage>>);

#[derive(Debug, Default)]
struct MemoryImage {
    bytes: Vec<u8>,
    /// How many bytes a sync (or an atomic replace) has made durable.
    synced: usize,
}

impl MemoryStorage {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// A store holding `bytes` (a journal image, or any bytes to test the decoder with).
    pub fn from_bytes(bytes: Vec<u8>) -> Self {
        let synced = bytes.len();
        Self(Arc::new(parking_lot::Mutex::new(MemoryImage { bytes, synced })))
    }

    /// A copy of the bytes stored.
    pub fn bytes(&self) -> Vec<u8> {
        self.0.lock().bytes.clone()
    }

    /// Simulates losing power: of the bytes appended since the last sync, only the first
    /// `survive` (at most all of them) are kept, as a device may have written part of them.
    pub fn power_cut(&self, survive: usize) {
        let mut m = self.0.lock();
        let keep = (m.synced + survive).min(m.bytes.len());
        m.bytes.truncate(keep);
        m.synced = keep;
    }
}

impl Storage for MemoryStorage {
    fn read_all(&mut self) -> io::Result<Vec<u8>> {
        Ok(self.bytes())
    }

    fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.0.lock().bytes.extend_from_slice(bytes);
        Ok(())
    }

    fn preserve(&mut self, _bytes: &[u8]) -> io::Result<Option<PathBuf>> {
        Ok(None)
    }

    fn replace(&mut self, bytes: &[u8]) -> io::Result<()> {
        let mut m = self.0.lock();
        m.bytes = bytes.to_vec();
        m.synced = m.bytes.len();
        Ok(())
    }

    fn syncer(&self) -> Syncer {
        Syncer(SyncTarget::Memory(self.0.clone()))
    }
}
