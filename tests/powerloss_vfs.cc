// The power-loss VFS (powerloss_vfs.h).

#include "powerloss_vfs.h"

#include <fcntl.h>
#include <sqlite3.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <set>
#include <string>
#include <utility>
#include <vector>

namespace keygate::testing {

namespace {

constexpr std::int64_t kSector = 512;

// One file's unsynced state, shared by every handle on its inode.
struct Inode {
  std::string path;  // the name it was last opened under
  // Our own descriptor, for reading durable bytes and applying a cut. It is
  // closed only when no connection is open (PowerCut, Reset): closing any
  // descriptor of a file drops the process's POSIX locks on it. Holding it
  // also keeps the inode number from being reused.
  int fd = -1;
  bool main_db = false;
  int open_handles = 0;
  std::int64_t durable_size = 0;
  // Sector index -> its durable bytes (shorter than a sector at the durable
  // end of file, empty past it), for each sector changed since the last sync.
  std::map<std::int64_t, std::string> undo;
};

std::int64_t FdSize(int fd) {
  struct stat st {};
  if (::fstat(fd, &st) != 0) return 0;
  return st.st_size;
}

std::string ReadAt(int fd, std::int64_t offset, std::int64_t len) {
  std::string out(static_cast<std::size_t>(std::max<std::int64_t>(len, 0)), '\0');
  std::size_t done = 0;
  while (done < out.size()) {
    const ssize_t n = ::pread(fd, out.data() + done, out.size() - done,
                              static_cast<off_t>(offset + static_cast<std::int64_t>(done)));
    if (n <= 0) break;
    done += static_cast<std::size_t>(n);
  }
  out.resize(done);
  return out;
}

bool WriteAt(int fd, std::int64_t offset, const std::string& data) {
  std::size_t done = 0;
  while (done < data.size()) {
    const ssize_t n = ::pwrite(fd, data.data() + done, data.size() - done,
                               static_cast<off_t>(offset + static_cast<std::int64_t>(done)));
    if (n <= 0) return false;
    done += static_cast<std::size_t>(n);
  }
  return true;
}

}  // namespace

struct PowerLossVfs::Impl {
  sqlite3_vfs vfs{};  // registered; pAppData points back here
  sqlite3_vfs* real = nullptr;
  sqlite3_io_methods methods{};

  std::mutex mu;
  std::map<std::pair<dev_t, ino_t>, std::unique_ptr<Inode>> inodes;
  std::vector<int> graveyard;       // descriptors of deleted files, closed later
  std::set<std::string> shm_files;  // "<db>-shm" of every database opened
  std::uint64_t armed_at = 0;       // 0: disarmed
  std::uint64_t calls = 0;
  std::uint64_t sync_calls = 0;
  bool power_off = false;

  // Counts a mutating call; true if the power goes (or went) off at it.
  bool CountAndCut() {
    if (power_off) return true;
    ++calls;
    if (armed_at != 0 && calls >= armed_at) power_off = true;
    return power_off;
  }

  // Saves the durable bytes of sectors [first, last] not saved yet.
  static void SaveSectors(Inode& in, std::int64_t first, std::int64_t last) {
    for (std::int64_t s = first; s <= last; ++s) {
      if (in.undo.count(s) != 0) continue;
      const std::int64_t len = std::clamp<std::int64_t>(in.durable_size - s * kSector, 0, kSector);
      in.undo.emplace(s, ReadAt(in.fd, s * kSector, len));
    }
  }

  bool CloseAll() {
    for (const auto& [key, in] : inodes) {
      if (in->open_handles != 0) return false;
    }
    for (const auto& [key, in] : inodes) ::close(in->fd);
    inodes.clear();
    for (const int fd : graveyard) ::close(fd);
    graveyard.clear();
    shm_files.clear();
    armed_at = 0;
    calls = 0;
    sync_calls = 0;
    power_off = false;
    return true;
  }
};

namespace {

using Impl = PowerLossVfs::Impl;

// A handle: our header, then the wrapped VFS's file object.
struct File {
  sqlite3_file base;  // must be first: SQLite sees this
  Impl* impl;
  Inode* inode;  // nullptr: untracked
  sqlite3_file* real;
};

constexpr std::size_t kHeaderSize = (sizeof(File) + 15) & ~std::size_t{15};

Impl* ImplOf(sqlite3_vfs* vfs) { return static_cast<Impl*>(vfs->pAppData); }
File* FileOf(sqlite3_file* f) { return reinterpret_cast<File*>(f); }

// --- io methods -------------------------------------------------------------

int Close(sqlite3_file* f) {
  File* p = FileOf(f);
  const int rc = p->real->pMethods->xClose(p->real);
  if (p->inode != nullptr) {
    const std::lock_guard<std::mutex> lock(p->impl->mu);
    --p->inode->open_handles;
  }
  return rc;
}

int Read(sqlite3_file* f, void* buf, int amt, sqlite3_int64 off) {
  File* p = FileOf(f);
  if (p->inode != nullptr) {
    const std::lock_guard<std::mutex> lock(p->impl->mu);
    if (p->impl->power_off) return SQLITE_IOERR_READ;
  }
  return p->real->pMethods->xRead(p->real, buf, amt, off);
}

int Write(sqlite3_file* f, const void* buf, int amt, sqlite3_int64 off) {
  File* p = FileOf(f);
  if (p->inode == nullptr) return p->real->pMethods->xWrite(p->real, buf, amt, off);
  const std::lock_guard<std::mutex> lock(p->impl->mu);
  if (p->impl->CountAndCut()) return SQLITE_IOERR_WRITE;
  if (amt > 0) Impl::SaveSectors(*p->inode, off / kSector, (off + amt - 1) / kSector);
  return p->real->pMethods->xWrite(p->real, buf, amt, off);
}

int Truncate(sqlite3_file* f, sqlite3_int64 size) {
  File* p = FileOf(f);
  if (p->inode == nullptr) return p->real->pMethods->xTruncate(p->real, size);
  const std::lock_guard<std::mutex> lock(p->impl->mu);
  if (p->impl->CountAndCut()) return SQLITE_IOERR_TRUNCATE;
  Inode& in = *p->inode;
  const std::int64_t end = std::max(FdSize(in.fd), in.durable_size);
  if (end > size) Impl::SaveSectors(in, size / kSector, (end - 1) / kSector);
  return p->real->pMethods->xTruncate(p->real, size);
}

int Sync(sqlite3_file* f, int flags) {
  File* p = FileOf(f);
  if (p->inode == nullptr) return p->real->pMethods->xSync(p->real, flags);
  const std::lock_guard<std::mutex> lock(p->impl->mu);
  if (p->impl->CountAndCut()) return SQLITE_IOERR_FSYNC;
  ++p->impl->sync_calls;
  p->inode->undo.clear();
  p->inode->durable_size = FdSize(p->inode->fd);
  return SQLITE_OK;  // the real file is the model's disk: no real fsync needed
}

int FileSize(sqlite3_file* f, sqlite3_int64* size) {
  File* p = FileOf(f);
  if (p->inode != nullptr) {
    const std::lock_guard<std::mutex> lock(p->impl->mu);
    if (p->impl->power_off) return SQLITE_IOERR_FSTAT;
  }
  return p->real->pMethods->xFileSize(p->real, size);
}

int Lock(sqlite3_file* f, int level) {
  File* p = FileOf(f);
  return p->real->pMethods->xLock(p->real, level);
}
int Unlock(sqlite3_file* f, int level) {
  File* p = FileOf(f);
  return p->real->pMethods->xUnlock(p->real, level);
}
int CheckReservedLock(sqlite3_file* f, int* out) {
  File* p = FileOf(f);
  return p->real->pMethods->xCheckReservedLock(p->real, out);
}
int FileControl(sqlite3_file* f, int op, void* arg) {
  File* p = FileOf(f);
  return p->real->pMethods->xFileControl(p->real, op, arg);
}
int SectorSize(sqlite3_file* f) {
  File* p = FileOf(f);
  return p->real->pMethods->xSectorSize(p->real);
}
int DeviceCharacteristics(sqlite3_file* f) {
  File* p = FileOf(f);
  return p->real->pMethods->xDeviceCharacteristics(p->real);
}
// The WAL index stays the wrapped VFS's shared memory (PowerCut deletes it).
int ShmMap(sqlite3_file* f, int region, int size, int extend, void volatile** out) {
  File* p = FileOf(f);
  return p->real->pMethods->xShmMap(p->real, region, size, extend, out);
}
int ShmLock(sqlite3_file* f, int offset, int n, int flags) {
  File* p = FileOf(f);
  return p->real->pMethods->xShmLock(p->real, offset, n, flags);
}
void ShmBarrier(sqlite3_file* f) {
  File* p = FileOf(f);
  p->real->pMethods->xShmBarrier(p->real);
}
int ShmUnmap(sqlite3_file* f, int delete_flag) {
  File* p = FileOf(f);
  return p->real->pMethods->xShmUnmap(p->real, delete_flag);
}

// --- vfs methods ------------------------------------------------------------

constexpr int kTracked =
    SQLITE_OPEN_MAIN_DB | SQLITE_OPEN_MAIN_JOURNAL | SQLITE_OPEN_WAL | SQLITE_OPEN_SUPER_JOURNAL;

int Open(sqlite3_vfs* vfs, const char* name, sqlite3_file* f, int flags, int* out_flags) {
  Impl* impl = ImplOf(vfs);
  File* p = FileOf(f);
  p->base.pMethods = nullptr;
  p->impl = impl;
  p->inode = nullptr;
  p->real = reinterpret_cast<sqlite3_file*>(reinterpret_cast<char*>(f) + kHeaderSize);
  const bool tracked = name != nullptr && (flags & kTracked) != 0;
  if (tracked) {
    const std::lock_guard<std::mutex> lock(impl->mu);
    if (impl->power_off) return SQLITE_IOERR;
  }
  const int rc = impl->real->xOpen(impl->real, name, p->real, flags, out_flags);
  if (rc != SQLITE_OK) return rc;
  p->base.pMethods = &impl->methods;
  if (!tracked) return SQLITE_OK;
  struct stat st {};
  if (::stat(name, &st) != 0) return SQLITE_OK;  // cannot happen: it was just opened
  const std::lock_guard<std::mutex> lock(impl->mu);
  std::unique_ptr<Inode>& in = impl->inodes[{st.st_dev, st.st_ino}];
  if (in == nullptr) {
    const int fd = ::open(name, O_RDWR | O_CLOEXEC);
    if (fd < 0) {
      impl->inodes.erase({st.st_dev, st.st_ino});
      p->real->pMethods->xClose(p->real);
      p->base.pMethods = nullptr;
      return SQLITE_CANTOPEN;
    }
    in = std::make_unique<Inode>();
    in->fd = fd;
    in->durable_size = FdSize(fd);  // what others wrote before is on the disk
  }
  in->path = name;
  ++in->open_handles;
  if ((flags & SQLITE_OPEN_MAIN_DB) != 0) {
    in->main_db = true;
    impl->shm_files.insert(std::string(name) + "-shm");
  }
  p->inode = in.get();
  return SQLITE_OK;
}

int Delete(sqlite3_vfs* vfs, const char* name, int sync_dir) {
  Impl* impl = ImplOf(vfs);
  {
    const std::lock_guard<std::mutex> lock(impl->mu);
    struct stat st {};
    if (::stat(name, &st) == 0) {
      auto it = impl->inodes.find({st.st_dev, st.st_ino});
      if (it != impl->inodes.end()) {
        if (impl->CountAndCut()) return SQLITE_IOERR_DELETE;
        // Deleting is durable at once (see the header): its unsynced data goes
        // with it. Its descriptor is closed when no connection is open.
        if (it->second->open_handles == 0) {
          impl->graveyard.push_back(it->second->fd);
          impl->inodes.erase(it);
        } else {
          it->second->undo.clear();
        }
      }
    }
  }
  return impl->real->xDelete(impl->real, name, sync_dir);
}

int Access(sqlite3_vfs* vfs, const char* name, int flags, int* out) {
  Impl* impl = ImplOf(vfs);
  return impl->real->xAccess(impl->real, name, flags, out);
}
int FullPathname(sqlite3_vfs* vfs, const char* name, int n, char* out) {
  Impl* impl = ImplOf(vfs);
  return impl->real->xFullPathname(impl->real, name, n, out);
}
void* DlOpen(sqlite3_vfs* vfs, const char* name) {
  Impl* impl = ImplOf(vfs);
  return impl->real->xDlOpen(impl->real, name);
}
void DlError(sqlite3_vfs* vfs, int n, char* out) {
  Impl* impl = ImplOf(vfs);
  impl->real->xDlError(impl->real, n, out);
}
void (*DlSym(sqlite3_vfs* vfs, void* handle, const char* sym))() {
  Impl* impl = ImplOf(vfs);
  return impl->real->xDlSym(impl->real, handle, sym);
}
void DlClose(sqlite3_vfs* vfs, void* handle) {
  Impl* impl = ImplOf(vfs);
  impl->real->xDlClose(impl->real, handle);
}
int Randomness(sqlite3_vfs* vfs, int n, char* out) {
  Impl* impl = ImplOf(vfs);
  return impl->real->xRandomness(impl->real, n, out);
}
int Sleep(sqlite3_vfs* vfs, int us) {
  Impl* impl = ImplOf(vfs);
  return impl->real->xSleep(impl->real, us);
}
int CurrentTime(sqlite3_vfs* vfs, double* out) {
  Impl* impl = ImplOf(vfs);
  return impl->real->xCurrentTime(impl->real, out);
}
int GetLastError(sqlite3_vfs* vfs, int n, char* out) {
  Impl* impl = ImplOf(vfs);
  return impl->real->xGetLastError(impl->real, n, out);
}
int CurrentTimeInt64(sqlite3_vfs* vfs, sqlite3_int64* out) {
  Impl* impl = ImplOf(vfs);
  return impl->real->xCurrentTimeInt64(impl->real, out);
}

}  // namespace

PowerLossVfs::PowerLossVfs() : impl_(std::make_unique<Impl>()) {
  Impl& i = *impl_;
  i.real = sqlite3_vfs_find(nullptr);
  // Version 2: no xFetch, so every read goes through xRead (no mmap).
  i.methods.iVersion = 2;
  i.methods.xClose = Close;
  i.methods.xRead = Read;
  i.methods.xWrite = Write;
  i.methods.xTruncate = Truncate;
  i.methods.xSync = Sync;
  i.methods.xFileSize = FileSize;
  i.methods.xLock = Lock;
  i.methods.xUnlock = Unlock;
  i.methods.xCheckReservedLock = CheckReservedLock;
  i.methods.xFileControl = FileControl;
  i.methods.xSectorSize = SectorSize;
  i.methods.xDeviceCharacteristics = DeviceCharacteristics;
  i.methods.xShmMap = ShmMap;
  i.methods.xShmLock = ShmLock;
  i.methods.xShmBarrier = ShmBarrier;
  i.methods.xShmUnmap = ShmUnmap;

  i.vfs.iVersion = 2;
  i.vfs.szOsFile = static_cast<int>(kHeaderSize) + i.real->szOsFile;
  i.vfs.mxPathname = i.real->mxPathname;
  i.vfs.zName = "keygate-powerloss";
  i.vfs.pAppData = &i;
  i.vfs.xOpen = Open;
  i.vfs.xDelete = Delete;
  i.vfs.xAccess = Access;
  i.vfs.xFullPathname = FullPathname;
  i.vfs.xDlOpen = DlOpen;
  i.vfs.xDlError = DlError;
  i.vfs.xDlSym = DlSym;
  i.vfs.xDlClose = DlClose;
  i.vfs.xRandomness = Randomness;
  i.vfs.xSleep = Sleep;
  i.vfs.xCurrentTime = CurrentTime;
  i.vfs.xGetLastError = GetLastError;
  i.vfs.xCurrentTimeInt64 = CurrentTimeInt64;
  sqlite3_vfs_register(&i.vfs, 0);
}

PowerLossVfs::~PowerLossVfs() {
  Uninstall();
  sqlite3_vfs_unregister(&impl_->vfs);
  (void)impl_->CloseAll();
}

void PowerLossVfs::Install() { sqlite3_vfs_register(&impl_->vfs, 1); }
void PowerLossVfs::Uninstall() { sqlite3_vfs_register(impl_->real, 1); }

void PowerLossVfs::Arm(std::uint64_t n) {
  const std::lock_guard<std::mutex> lock(impl_->mu);
  impl_->calls = 0;
  impl_->sync_calls = 0;
  impl_->armed_at = n;
  impl_->power_off = false;
}

bool PowerLossVfs::cut() const {
  const std::lock_guard<std::mutex> lock(impl_->mu);
  return impl_->power_off;
}

std::uint64_t PowerLossVfs::mutating_calls() const {
  const std::lock_guard<std::mutex> lock(impl_->mu);
  return impl_->calls;
}

std::uint64_t PowerLossVfs::syncs() const {
  const std::lock_guard<std::mutex> lock(impl_->mu);
  return impl_->sync_calls;
}

bool PowerLossVfs::PowerCut(std::uint64_t seed, CutReport* report) {
  const std::lock_guard<std::mutex> lock(impl_->mu);
  Impl& i = *impl_;
  *report = CutReport{};
  std::vector<Inode*> files;
  for (const auto& [key, in] : i.inodes) {
    if (in->open_handles != 0) return false;
    files.push_back(in.get());
  }
  // In name order, each with its own generator: the choices depend on the
  // seed and the file's role, not on inode numbers.
  std::sort(files.begin(), files.end(),
            [](const Inode* a, const Inode* b) { return a->path < b->path; });
  for (Inode* in : files) {
    const std::int64_t current = FdSize(in->fd);
    if (in->undo.empty() && current == in->durable_size) continue;
    ++report->files;
    const std::string base = in->path.substr(in->path.rfind('/') + 1);
    std::mt19937_64 rng(seed ^ std::hash<std::string>{}(base));
    const bool keep_size = current == in->durable_size || rng() % 2 == 0;
    if (!keep_size) ++report->sizes_reverted;
    // Per file: the write-back finished (every sector kept), never started
    // (every sector dropped), or was under way (each sector at random).
    const std::uint64_t file_mode = rng() % 4;
    for (const auto& [sector, durable] : in->undo) {
      const std::int64_t at = sector * kSector;
      std::string old_bytes = durable;
      old_bytes.resize(kSector, '\0');
      std::string new_bytes = ReadAt(in->fd, at, kSector);
      new_bytes.resize(kSector, '\0');
      std::string result;
      const std::uint64_t mode = at >= current ? 1 : file_mode < 2 ? file_mode : rng() % 3;
      if (mode == 0) {
        ++report->kept;
        continue;  // already on the disk
      }
      if (mode == 1) {
        ++report->dropped;
        result = old_bytes;
      } else {
        ++report->torn;
        const std::size_t split = 1 + rng() % (kSector - 1);
        const bool new_first = rng() % 2 == 0;
        const std::string& a = new_first ? new_bytes : old_bytes;
        const std::string& b = new_first ? old_bytes : new_bytes;
        result = a.substr(0, split) + b.substr(split);
      }
      if (!WriteAt(in->fd, at, result)) return false;
    }
    if (::ftruncate(in->fd, static_cast<off_t>(keep_size ? current : in->durable_size)) != 0) {
      return false;
    }
  }
  for (const std::string& shm : i.shm_files) (void)::unlink(shm.c_str());
  return i.CloseAll();
}

bool PowerLossVfs::Reset() {
  const std::lock_guard<std::mutex> lock(impl_->mu);
  return impl_->CloseAll();
}

}  // namespace keygate::testing
