//! A VFS shim that hands each commit's WAL frames to the kernel in one `pwrite`.
//!
//! SQLite writes a WAL frame as two `pwrite` calls (its 24-byte header, then the page), so a
//! commit of N pages costs 2N system calls before its fsync, at offsets that straddle the
//! page cache's 4 KiB pages. Durable ingest commits small batches continuously, and on the
//! machines measured here those calls were the largest single cost of the writer thread.
//!
//! This VFS wraps the platform's default one (`unix`) and changes one thing, for the WAL
//! file only: consecutive writes that continue (or overwrite) a pending run of bytes are
//! gathered in memory, and the run goes to the file in one write **before any other
//! operation on that file** — `xSync`, `xRead`, `xTruncate`, `xFileSize`, `xFileControl`,
//! `xClose` and the rest. Every other file (the database, temp files) is passed through
//! untouched.
//!
//! Why that is safe with `synchronous=FULL` (the only mode the store uses it in): a commit
//! writes its frames and then calls `xSync` on the WAL before it publishes the new frames
//! to readers through the shared-memory index, so every published frame is in the file
//! (and on disk) first. Frames of a transaction that never reaches its `xSync` are not
//! committed, exactly as if SQLite had written them and crashed. A write error surfaces at
//! the operation that flushes (normally the commit's `xSync`) and fails that commit.
//! With `synchronous=NORMAL` a commit publishes without an `xSync`, so the shim must not be
//! used there; [`super::SqliteStore`] opens the writer through it only in
//! [`super::writer::Durability::Full`].

// The SQLite VFS interface is a C ABI: every function here is called by SQLite with
// pointers it owns, so this module is the one place the store needs `unsafe`.
#![allow(unsafe_code)]

use std::ffi::{CStr, c_char, c_int, c_void};
use std::mem::{align_of, size_of};
use std::ptr;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use rusqlite::ffi;

/// The name the store opens its writer connection with.
pub(crate) const VFS_NAME: &CStr = c"charter-walbuf";

/// A pending run is written out once it reaches this size, so a large transaction's frames go
/// out in writes of about this size and the buffer stays small.
const MAX_PENDING: usize = 60 << 10;

/// The pending buffer's capacity, allocated once when a WAL file is opened so that it does
/// not grow by reallocation: the largest run plus one frame of a 4 KiB page (a database with
/// larger pages grows it once). Kept at 64 KiB, where the allocator serves it from its
/// ordinary pages: a larger buffer (256 KiB) cost the idle process ~2 MB of resident memory.
const PENDING_CAPACITY: usize = MAX_PENDING + 4096 + 24;

/// The most bytes passed to the wrapped file in one write. SQLite's unix VFS writes at most
/// 128 KiB - 1 bytes per call (it masks the length with `0x1ffff`; its own callers never
/// write more than a page), so a longer run goes out in pieces of this size.
const MAX_WRITE: usize = 124 * 1024;

/// Write calls SQLite made on WAL files and writes the shim issued for them.
#[derive(Debug, Default)]
pub(crate) struct WalWriteCounts {
    /// `xWrite` calls received for WAL files.
    pub(crate) received: AtomicU64,
    /// Writes passed on to the file for them.
    pub(crate) issued: AtomicU64,
}

/// The registered VFS: SQLite keeps a pointer to it for the life of the process.
struct Registration {
    /// The wrapped VFS (the platform default).
    inner: *mut ffi::sqlite3_vfs,
    counts: &'static WalWriteCounts,
}

// SAFETY: `inner` points to SQLite's static default VFS, which SQLite itself shares across
// threads; the counters are atomics.
unsafe impl Send for Registration {}
// SAFETY: as above; nothing behind the pointers is mutated through this struct.
unsafe impl Sync for Registration {}

/// Register [`VFS_NAME`] (once per process); returns its counters.
pub(crate) fn register() -> Result<&'static WalWriteCounts, String> {
    static REGISTERED: OnceLock<Result<&'static WalWriteCounts, String>> = OnceLock::new();
    REGISTERED
        .get_or_init(|| register_as(VFS_NAME))
        .as_ref()
        .copied()
        .map_err(Clone::clone)
}

/// Register a shim VFS under `name` wrapping the default VFS. Each call registers a new
/// VFS (tests use their own names to read their own counters); it is never unregistered.
pub(crate) fn register_as(name: &'static CStr) -> Result<&'static WalWriteCounts, String> {
    // SAFETY: `sqlite3_vfs_find(NULL)` initialises SQLite if needed and returns the default
    // VFS, which lives for the process.
    let inner = unsafe { ffi::sqlite3_vfs_find(ptr::null()) };
    if inner.is_null() {
        return Err("SQLite has no default VFS to wrap".into());
    }
    let counts: &'static WalWriteCounts = Box::leak(Box::default());
    let registration: &'static Registration = Box::leak(Box::new(Registration { inner, counts }));
    // SAFETY: `inner` is valid (checked above); copying the struct copies its function
    // pointers, which stay valid for the process.
    let mut vfs: ffi::sqlite3_vfs = unsafe { ptr::read(inner) };
    // SAFETY: as above.
    let inner_size = unsafe { (*inner).szOsFile };
    let Ok(inner_size) = usize::try_from(inner_size) else {
        return Err("the default VFS reports a negative file size".into());
    };
    vfs.szOsFile = c_int::try_from(inner_offset() + inner_size)
        .map_err(|_| "the default VFS's file object is too large".to_string())?;
    vfs.zName = name.as_ptr();
    vfs.pNext = ptr::null_mut();
    // The default VFS reads its `pAppData` only in its own `xOpen`, which is always called
    // with its own pointer; the copied functions never see ours.
    vfs.pAppData = ptr::from_ref(registration).cast_mut().cast::<c_void>();
    vfs.xOpen = Some(shim_open);
    let vfs: &'static mut ffi::sqlite3_vfs = Box::leak(Box::new(vfs));
    // SAFETY: `vfs` is a complete VFS that lives for the process; not made the default.
    let rc = unsafe { ffi::sqlite3_vfs_register(vfs, 0) };
    if rc != ffi::SQLITE_OK {
        return Err(format!(
            "registering the WAL write VFS failed (SQLite code {rc})"
        ));
    }
    Ok(counts)
}

/// The file object SQLite allocates for us (`szOsFile` bytes): our part first, the wrapped
/// VFS's file object after it.
#[repr(C)]
struct ShimFile {
    /// Must be first: SQLite reads `pMethods` through a `*mut sqlite3_file`.
    base: ffi::sqlite3_file,
    inner: *mut ffi::sqlite3_file,
    /// The pending run, for a WAL file; null for every other file.
    pending: *mut Pending,
    counts: *const WalWriteCounts,
}

/// Bytes written by SQLite but not yet passed to the file: `data` belongs at `offset`.
struct Pending {
    offset: i64,
    data: Vec<u8>,
}

/// Where the wrapped file object starts inside ours (aligned for any C struct).
const fn inner_offset() -> usize {
    let align = align_of::<u64>();
    size_of::<ShimFile>().div_ceil(align) * align
}

static METHODS: ffi::sqlite3_io_methods = ffi::sqlite3_io_methods {
    iVersion: 3,
    xClose: Some(x_close),
    xRead: Some(x_read),
    xWrite: Some(x_write),
    xTruncate: Some(x_truncate),
    xSync: Some(x_sync),
    xFileSize: Some(x_file_size),
    xLock: Some(x_lock),
    xUnlock: Some(x_unlock),
    xCheckReservedLock: Some(x_check_reserved_lock),
    xFileControl: Some(x_file_control),
    xSectorSize: Some(x_sector_size),
    xDeviceCharacteristics: Some(x_device_characteristics),
    xShmMap: Some(x_shm_map),
    xShmLock: Some(x_shm_lock),
    xShmBarrier: Some(x_shm_barrier),
    xShmUnmap: Some(x_shm_unmap),
    xFetch: Some(x_fetch),
    xUnfetch: Some(x_unfetch),
};

unsafe extern "C" fn shim_open(
    vfs: *mut ffi::sqlite3_vfs,
    name: *const c_char,
    file: *mut ffi::sqlite3_file,
    flags: c_int,
    out_flags: *mut c_int,
) -> c_int {
    // SAFETY: SQLite calls `xOpen` with our VFS and a zeroed-or-not block of `szOsFile`
    // bytes at `file`, suitably aligned; we initialise every field before use.
    unsafe {
        let registration = &*((*vfs).pAppData as *const Registration);
        let shim = file.cast::<ShimFile>();
        let inner = file
            .cast::<u8>()
            .add(inner_offset())
            .cast::<ffi::sqlite3_file>();
        (*shim).base.pMethods = ptr::null();
        (*shim).inner = inner;
        (*shim).pending = ptr::null_mut();
        (*shim).counts = registration.counts;
        (*inner).pMethods = ptr::null();
        let Some(open) = (*registration.inner).xOpen else {
            return ffi::SQLITE_CANTOPEN;
        };
        let rc = open(registration.inner, name, inner, flags, out_flags);
        if rc != ffi::SQLITE_OK {
            // SQLite will not call our xClose (our pMethods is null): close what the
            // wrapped VFS may have left open.
            if let Some(methods) = (*inner).pMethods.as_ref()
                && let Some(close) = methods.xClose
            {
                close(inner);
            }
            return rc;
        }
        if flags & ffi::SQLITE_OPEN_WAL != 0 {
            (*shim).pending = Box::into_raw(Box::new(Pending {
                offset: 0,
                data: Vec::with_capacity(PENDING_CAPACITY),
            }));
        }
        (*shim).base.pMethods = &METHODS;
        ffi::SQLITE_OK
    }
}

/// Our part of a file object SQLite passes back.
///
/// # Safety
/// `file` must be a file object opened by [`shim_open`] and not yet closed.
unsafe fn shim<'a>(file: *mut ffi::sqlite3_file) -> &'a mut ShimFile {
    // SAFETY: guaranteed by the caller; SQLite never calls one file's methods concurrently
    // (a connection, and so its files, is used by one thread at a time).
    unsafe { &mut *file.cast::<ShimFile>() }
}

/// The wrapped file's methods.
///
/// # Safety
/// `shim` must have been opened successfully.
unsafe fn methods(shim: &ShimFile) -> &ffi::sqlite3_io_methods {
    // SAFETY: after a successful open the wrapped file's `pMethods` is valid until xClose.
    unsafe { &*(*shim.inner).pMethods }
}

/// Pass the pending run (if any) to the file.
///
/// # Safety
/// `shim` must have been opened successfully.
unsafe fn flush(shim: &mut ShimFile) -> c_int {
    // SAFETY: `pending` is null or the box made in `shim_open`, owned by this file.
    let Some(pending) = (unsafe { shim.pending.as_mut() }) else {
        return ffi::SQLITE_OK;
    };
    if pending.data.is_empty() {
        return ffi::SQLITE_OK;
    }
    // SAFETY: the file is open.
    let Some(write) = (unsafe { methods(shim) }).xWrite else {
        pending.data.clear();
        return ffi::SQLITE_IOERR_WRITE;
    };
    let mut rc = ffi::SQLITE_OK;
    let mut offset = pending.offset;
    for piece in pending.data.chunks(MAX_WRITE) {
        // `MAX_WRITE` fits a `c_int`.
        let len = piece.len() as c_int;
        // SAFETY: the file is open; `piece` is valid for `len` bytes.
        rc = unsafe { write(shim.inner, piece.as_ptr().cast(), len, offset) };
        // SAFETY: `counts` points to a leaked, process-long counter block.
        unsafe { &*shim.counts }
            .issued
            .fetch_add(1, Ordering::Relaxed);
        if rc != ffi::SQLITE_OK {
            break;
        }
        offset += i64::from(len);
    }
    // The run is gone either way: on an error the commit that needed it fails, and SQLite
    // rewrites its frames in the next transaction.
    pending.data.clear();
    rc
}

/// Flush, then call the wrapped method (the shape of every method but `xWrite`).
macro_rules! flushed {
    ($file:ident, $method:ident, $($arg:expr),*) => {{
        // SAFETY: SQLite calls this method on a file it opened through `shim_open`.
        let shim = unsafe { shim($file) };
        // SAFETY: the file is open.
        let rc = unsafe { flush(shim) };
        if rc != ffi::SQLITE_OK {
            return rc;
        }
        // SAFETY: the file is open; the arguments are SQLite's own, passed through.
        unsafe {
            match methods(shim).$method {
                Some(f) => f(shim.inner, $($arg),*),
                None => ffi::SQLITE_IOERR,
            }
        }
    }};
}

/// Call the wrapped method without flushing (locks and queries that read no file bytes).
macro_rules! passed {
    ($file:ident, $method:ident, $missing:expr, $($arg:expr),*) => {{
        // SAFETY: SQLite calls this method on a file it opened through `shim_open`.
        let shim = unsafe { shim($file) };
        // SAFETY: the file is open; the arguments are SQLite's own, passed through.
        unsafe {
            match methods(shim).$method {
                Some(f) => f(shim.inner, $($arg),*),
                None => $missing,
            }
        }
    }};
}

unsafe extern "C" fn x_close(file: *mut ffi::sqlite3_file) -> c_int {
    // SAFETY: SQLite closes a file it opened through `shim_open`, once.
    let shim = unsafe { shim(file) };
    // SAFETY: the file is open until the wrapped xClose below.
    let flushed = unsafe { flush(shim) };
    // SAFETY: as above.
    let rc = unsafe {
        match methods(shim).xClose {
            Some(close) => close(shim.inner),
            None => ffi::SQLITE_OK,
        }
    };
    if !shim.pending.is_null() {
        // SAFETY: the box made in `shim_open`, freed once here.
        drop(unsafe { Box::from_raw(shim.pending) });
        shim.pending = ptr::null_mut();
    }
    if flushed != ffi::SQLITE_OK {
        flushed
    } else {
        rc
    }
}

unsafe extern "C" fn x_read(
    file: *mut ffi::sqlite3_file,
    buf: *mut c_void,
    amount: c_int,
    offset: i64,
) -> c_int {
    flushed!(file, xRead, buf, amount, offset)
}

unsafe extern "C" fn x_write(
    file: *mut ffi::sqlite3_file,
    buf: *const c_void,
    amount: c_int,
    offset: i64,
) -> c_int {
    // SAFETY: SQLite calls this method on a file it opened through `shim_open`.
    let shim = unsafe { shim(file) };
    // SAFETY: `pending` is null (not a WAL file) or this file's own box.
    let Some(pending) = (unsafe { shim.pending.as_mut() }) else {
        // SAFETY: the file is open; the arguments are SQLite's own.
        return unsafe {
            match methods(shim).xWrite {
                Some(f) => f(shim.inner, buf, amount, offset),
                None => ffi::SQLITE_IOERR_WRITE,
            }
        };
    };
    let (Ok(len), true) = (usize::try_from(amount), offset >= 0) else {
        return ffi::SQLITE_IOERR_WRITE;
    };
    // SAFETY: SQLite passes `amount` readable bytes at `buf`.
    let bytes = unsafe { std::slice::from_raw_parts(buf.cast::<u8>(), len) };
    // SAFETY: `counts` points to a leaked, process-long counter block.
    unsafe { &*shim.counts }
        .received
        .fetch_add(1, Ordering::Relaxed);
    let end = pending.offset + pending.data.len() as i64;
    if !pending.data.is_empty() && offset >= pending.offset && offset <= end {
        // Continues the run or overwrites part of it (SQLite rewrites a frame it wrote
        // earlier in the same transaction, or a frame header's checksum).
        let start = usize::try_from(offset - pending.offset).unwrap_or(0);
        let stop = start + len;
        if stop > pending.data.len() {
            pending.data.resize(stop, 0);
        }
        pending.data[start..stop].copy_from_slice(bytes);
    } else {
        // SAFETY: the file is open.
        let rc = unsafe { flush(shim) };
        if rc != ffi::SQLITE_OK {
            return rc;
        }
        // SAFETY: as above; `flush` does not free the box.
        let pending = unsafe { &mut *shim.pending };
        pending.offset = offset;
        pending.data.extend_from_slice(bytes);
    }
    // SAFETY: as above.
    if unsafe { &*shim.pending }.data.len() >= MAX_PENDING {
        // SAFETY: the file is open.
        return unsafe { flush(shim) };
    }
    ffi::SQLITE_OK
}

unsafe extern "C" fn x_truncate(file: *mut ffi::sqlite3_file, size: i64) -> c_int {
    flushed!(file, xTruncate, size)
}

unsafe extern "C" fn x_sync(file: *mut ffi::sqlite3_file, flags: c_int) -> c_int {
    flushed!(file, xSync, flags)
}

unsafe extern "C" fn x_file_size(file: *mut ffi::sqlite3_file, size: *mut i64) -> c_int {
    flushed!(file, xFileSize, size)
}

unsafe extern "C" fn x_lock(file: *mut ffi::sqlite3_file, level: c_int) -> c_int {
    passed!(file, xLock, ffi::SQLITE_IOERR_LOCK, level)
}

unsafe extern "C" fn x_unlock(file: *mut ffi::sqlite3_file, level: c_int) -> c_int {
    passed!(file, xUnlock, ffi::SQLITE_IOERR_UNLOCK, level)
}

unsafe extern "C" fn x_check_reserved_lock(file: *mut ffi::sqlite3_file, out: *mut c_int) -> c_int {
    passed!(
        file,
        xCheckReservedLock,
        ffi::SQLITE_IOERR_CHECKRESERVEDLOCK,
        out
    )
}

unsafe extern "C" fn x_file_control(
    file: *mut ffi::sqlite3_file,
    op: c_int,
    arg: *mut c_void,
) -> c_int {
    // Some file controls (SQLITE_FCNTL_VFSNAME, ...) are answered by the wrapped file; a
    // missing method means "not handled", as SQLite expects.
    // SAFETY: SQLite calls this method on a file it opened through `shim_open`.
    let shim = unsafe { shim(file) };
    // SAFETY: the file is open.
    let rc = unsafe { flush(shim) };
    if rc != ffi::SQLITE_OK {
        return rc;
    }
    // SAFETY: the file is open; the arguments are SQLite's own.
    unsafe {
        match methods(shim).xFileControl {
            Some(f) => f(shim.inner, op, arg),
            None => ffi::SQLITE_NOTFOUND,
        }
    }
}

unsafe extern "C" fn x_sector_size(file: *mut ffi::sqlite3_file) -> c_int {
    passed!(file, xSectorSize, 4096,)
}

unsafe extern "C" fn x_device_characteristics(file: *mut ffi::sqlite3_file) -> c_int {
    passed!(file, xDeviceCharacteristics, 0,)
}

unsafe extern "C" fn x_shm_map(
    file: *mut ffi::sqlite3_file,
    page: c_int,
    page_size: c_int,
    extend: c_int,
    out: *mut *mut c_void,
) -> c_int {
    passed!(
        file,
        xShmMap,
        ffi::SQLITE_IOERR_SHMMAP,
        page,
        page_size,
        extend,
        out
    )
}

unsafe extern "C" fn x_shm_lock(
    file: *mut ffi::sqlite3_file,
    offset: c_int,
    n: c_int,
    flags: c_int,
) -> c_int {
    passed!(file, xShmLock, ffi::SQLITE_IOERR_SHMLOCK, offset, n, flags)
}

unsafe extern "C" fn x_shm_barrier(file: *mut ffi::sqlite3_file) {
    // SAFETY: SQLite calls this method on a file it opened through `shim_open`.
    let shim = unsafe { shim(file) };
    // SAFETY: the file is open.
    unsafe {
        if let Some(f) = methods(shim).xShmBarrier {
            f(shim.inner);
        }
    }
}

unsafe extern "C" fn x_shm_unmap(file: *mut ffi::sqlite3_file, delete: c_int) -> c_int {
    passed!(file, xShmUnmap, ffi::SQLITE_OK, delete)
}

unsafe extern "C" fn x_fetch(
    file: *mut ffi::sqlite3_file,
    offset: i64,
    amount: c_int,
    out: *mut *mut c_void,
) -> c_int {
    // SAFETY: SQLite calls this method on a file it opened through `shim_open`.
    let shim = unsafe { shim(file) };
    // SAFETY: the file is open.
    let rc = unsafe { flush(shim) };
    if rc != ffi::SQLITE_OK {
        return rc;
    }
    // SAFETY: the file is open; a missing xFetch means "no mapping", answered with a null
    // pointer as SQLite's own unix VFS does when memory mapping is off.
    unsafe {
        match methods(shim).xFetch {
            Some(f) => f(shim.inner, offset, amount, out),
            None => {
                *out = ptr::null_mut();
                ffi::SQLITE_OK
            }
        }
    }
}

unsafe extern "C" fn x_unfetch(
    file: *mut ffi::sqlite3_file,
    offset: i64,
    page: *mut c_void,
) -> c_int {
    passed!(file, xUnfetch, ffi::SQLITE_OK, offset, page)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::{Connection, OpenFlags};
    use std::path::{Path, PathBuf};

    fn temp_dir(tag: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("charter-walbuf-{tag}-{}", uuid::Uuid::now_v7()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        dir
    }

    /// A write connection through the shim named `vfs`: WAL, fsync at commit, no automatic
    /// checkpoint (the frames stay in the WAL for the test to read), a small page cache.
    fn open_shim(path: &Path, vfs: &CStr, cache_pages: i64) -> Connection {
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE;
        let conn = Connection::open_with_flags_and_vfs(path, flags, vfs).expect("open via shim");
        let mode: String = conn
            .pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))
            .expect("WAL");
        assert_eq!(mode, "wal");
        conn.pragma_update(None, "synchronous", "FULL")
            .expect("synchronous");
        conn.pragma_update(None, "wal_autocheckpoint", 0)
            .expect("no autocheckpoint");
        conn.pragma_update(None, "cache_size", cache_pages)
            .expect("cache_size");
        conn
    }

    fn row_text(i: i64, round: i64) -> String {
        format!("{i}:{round}:").repeat(120)
    }

    /// Checks a copy of `path` and its WAL, opened by SQLite's default VFS: recovery rebuilds
    /// the index from the WAL's frames, accepting only frames whose checksums chain, so
    /// every committed row read back proves the frames reached the file intact.
    fn check_copy(path: &Path, rows: i64, round: i64) {
        let copy_dir = temp_dir("copy");
        let copy = copy_dir.join("copy.db");
        std::fs::copy(path, &copy).expect("copy db");
        let mut wal = path.as_os_str().to_owned();
        wal.push("-wal");
        let mut copy_wal = copy.as_os_str().to_owned();
        copy_wal.push("-wal");
        std::fs::copy(&wal, &copy_wal).expect("copy wal");
        let conn = Connection::open(&copy).expect("open copy");
        let ok: String = conn
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .expect("integrity_check");
        assert_eq!(ok, "ok");
        let mut stmt = conn
            .prepare("SELECT id, body FROM t ORDER BY id")
            .expect("select");
        let got: Vec<(i64, String)> = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .expect("query")
            .collect::<std::result::Result<_, _>>()
            .expect("rows");
        assert_eq!(got.len() as i64, rows);
        for (i, (id, body)) in got.iter().enumerate() {
            assert_eq!(*id, i as i64);
            assert_eq!(body, &row_text(*id, round), "row {id}");
        }
        drop(stmt);
        drop(conn);
        let _ = std::fs::remove_dir_all(copy_dir);
    }

    #[test]
    fn a_commits_frames_reach_the_file_in_few_large_writes_and_read_back() {
        let counts = register_as(c"charter-walbuf-test-commit").expect("register");
        let dir = temp_dir("commit");
        let path = dir.join("t.db");
        let conn = open_shim(&path, c"charter-walbuf-test-commit", 2000);
        conn.execute_batch("CREATE TABLE t (id INTEGER PRIMARY KEY, body TEXT NOT NULL)")
            .expect("create");
        let received = counts.received.load(Ordering::Relaxed);
        let issued = counts.issued.load(Ordering::Relaxed);
        let tx = conn.unchecked_transaction().expect("begin");
        for i in 0..300 {
            tx.execute(
                "INSERT INTO t (id, body) VALUES (?1, ?2)",
                (i, row_text(i, 0)),
            )
            .expect("insert");
        }
        tx.commit().expect("commit");
        let received = counts.received.load(Ordering::Relaxed) - received;
        let issued = counts.issued.load(Ordering::Relaxed) - issued;
        // ~300 rows of ~700 bytes: over 50 pages, two writes each from SQLite (a 24-byte
        // frame header, then the 4 KiB page), all one contiguous run of 4,120-byte frames.
        assert!(received >= 100, "SQLite made {received} WAL writes");
        let run = (received / 2) as usize * (24 + 4096);
        // Passed on whenever the run reaches MAX_PENDING, and at the commit's sync.
        assert!(
            issued >= 1 && issued <= run.div_ceil(MAX_PENDING) as u64,
            "{received} WAL writes ({run} bytes) reached the file as {issued}"
        );
        assert!(issued * 20 <= received, "{received} writes became {issued}");
        // Another connection (default VFS) sees the commit while the writer is open.
        let reader = Connection::open(&path).expect("reader");
        let n: i64 = reader
            .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .expect("count");
        assert_eq!(n, 300);
        check_copy(&path, 300, 0);
        drop(reader);
        drop(conn);
        let _ = std::fs::remove_dir_all(dir);
    }

    /// A transaction larger than the page cache spills frames before its commit and then
    /// rewrites some of them in place, and recomputes checksums by reading frames back:
    /// the non-contiguous writes and the reads must see what SQLite wrote.
    #[test]
    fn a_transaction_that_spills_and_rewrites_frames_commits_intact() {
        let counts = register_as(c"charter-walbuf-test-spill").expect("register");
        let dir = temp_dir("spill");
        let path = dir.join("t.db");
        let conn = open_shim(&path, c"charter-walbuf-test-spill", 10);
        conn.execute_batch("CREATE TABLE t (id INTEGER PRIMARY KEY, body TEXT NOT NULL)")
            .expect("create");
        let tx = conn.unchecked_transaction().expect("begin");
        for i in 0..400 {
            tx.execute(
                "INSERT INTO t (id, body) VALUES (?1, ?2)",
                (i, row_text(i, 0)),
            )
            .expect("insert");
        }
        for round in 1..=3 {
            for i in 0..400 {
                tx.execute(
                    "UPDATE t SET body = ?2 WHERE id = ?1",
                    (i, row_text(i, round)),
                )
                .expect("update");
            }
        }
        tx.commit().expect("commit");
        assert!(counts.issued.load(Ordering::Relaxed) > 1);
        check_copy(&path, 400, 3);
        // A second transaction after the spilled one, on the same connection.
        conn.execute("DELETE FROM t WHERE id >= 200", [])
            .expect("delete");
        check_copy(&path, 200, 3);
        drop(conn);
        // Reopened through the shim: the last connection's close checkpointed the WAL.
        let conn = open_shim(&path, c"charter-walbuf-test-spill", 10);
        let n: i64 = conn
            .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .expect("count");
        assert_eq!(n, 200);
        drop(conn);
        let _ = std::fs::remove_dir_all(dir);
    }
}
