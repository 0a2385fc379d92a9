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
    /// Cuts the store to `len` bytes, durably (drops a torn tail).
    fn truncate(&mut self, len: u64) -> io::Result<()>;
    /// Replaces the whole content with `bytes`, atomically and durably: after a crash at any
    /// moment the store holds either the old content or the new.
    fn replace(&mut self, bytes: &[u8]) -> io::Result<()>;
    /// A handle that makes what was appended so far durable, usable without holding the
    /// journal's lock (so appends go on while an fsync runs: group commit).
    fn syncer(&self) -> Syncer;
}

/// Makes appended bytes durable. See [`Storage::syncer`].
#[derive(Clone, Debug)]
pub struct Syncer(Option<Arc<File>>);

impl Syncer {
    /// A syncer with nothing to do (memory storage).
    pub fn none() -> Self {
        Self(None)
    }

    /// Flushes the file's data to the device (`fdatasync`).
    ///
    /// # Errors
    /// The operating system's error.
    pub fn sync(&self) -> io::Result<()> {
        match &self.0 {
            Some(f) => f.sync_data(),
            None => Ok(()),
        }
    }
}

/// A journal file on disk.
#[derive(Debug)]
pub struct FileStorage {
    path: PathBuf,
    file: Option<Arc<File>>,
}

impl FileStorage {
    /// The file at `path` (created when the journal starts, if missing).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into(), file: None }
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

    fn truncate(&mut self, len: u64) -> io::Result<()> {
        let f = self.open()?;
        f.set_len(len)?;
        f.sync_all()
    }

    fn replace(&mut self, bytes: &[u8]) -> io::Result<()> {
        let mut tmp_name = self.path.clone().into_os_string();
        tmp_name.push(".compact");
        let tmp = PathBuf::from(tmp_name);
        {
            let mut f = File::create(&tmp)?;
            f.write_all(bytes)?;
            f.sync_all()?;
        }
        fs::rename(&tmp, &self.path)?;
        self.sync_dir()?;
        self.file = None;
        self.open()?;
        Ok(())
    }

    fn syncer(&self) -> Syncer {
        Syncer(self.file.clone())
    }
}

/// Journal bytes in memory, shared between clones: a "crash" is dropping the journal and
/// starting a new one on a clone of the storage. Everything appended counts as durable, as it
/// is for a process killed with SIGKILL (the kernel keeps written bytes).
#[derive(Clone, Debug, Default)]
pub struct MemoryStorage(Arc<parking_lot::Mutex<Vec<u8>>>);

impl MemoryStorage {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// A store holding `bytes` (a journal image, or any bytes to test the decoder with).
    pub fn from_bytes(bytes: Vec<u8>) -> Self {
        Self(Arc::new(parking_lot::Mutex::new(bytes)))
    }

    /// A copy of the bytes stored.
    pub fn bytes(&self) -> Vec<u8> {
        self.0.lock().clone()
    }
}

impl Storage for MemoryStorage {
    fn read_all(&mut self) -> io::Result<Vec<u8>> {
        Ok(self.bytes())
    }

    fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.0.lock().extend_from_slice(bytes);
        Ok(())
    }

    fn truncate(&mut self, len: u64) -> io::Result<()> {
        self.0.lock().truncate(usize::try_from(len).unwrap_or(usize::MAX));
        Ok(())
    }

    fn replace(&mut self, bytes: &[u8]) -> io::Result<()> {
        *self.0.lock() = bytes.to_vec();
        Ok(())
    }

    fn syncer(&self) -> Syncer {
        Syncer::none()
    }
}
