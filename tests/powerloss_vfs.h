// A SQLite VFS for power-loss tests: it wraps the default (unix) VFS and
// models what a power cut does to data that was written but not yet synced.
//
// The model ("the disk" is the real file; "the page cache" is what we keep
// apart):
//   * Every xWrite and xTruncate of a database, rollback journal or WAL file
//     reaches the real file at once (so every connection of the process
//     reads it, as it would read the OS page cache), and the layer keeps the
//     durable content of each 512-byte sector it changed since the file's
//     last xSync, and the file's durable size. The tracking is per inode,
//     shared by every handle on the file (fsync syncs the inode, not a
//     descriptor) and survives closing the file (closing does not sync).
//   * xSync makes the file durable: the saved sectors are forgotten. The
//     real fsync is skipped (the test process does not lose power; the real
//     file is the model's disk).
//   * At a power cut (PowerCut), chosen by a seed per file: all its unsynced
//     sectors reached the disk, or none did, or each one on its own was kept
//     (it reached the disk), dropped (the durable bytes come back) or torn (a
//     prefix from one, the rest from the other); a file whose size changed
//     since its last sync gets its durable size or its current one.
//     The shared-memory WAL index (`<db>-shm`) is not durable: it is deleted.
//     Torn sectors mix only the old and the new bytes of sectors that were
//     written, so the unix VFS's SQLITE_IOCAP_POWERSAFE_OVERWRITE (passed
//     through) stays true.
//   * Directory operations (creating a file, xDelete, and the store's own
//     link and rename) are treated as durable at once, whatever syncDir says:
//     SQLite syncs the directory of a new WAL at its first sync and keygate
//     syncs the directory after linking a new database into place, so
//     modelling lost directory entries would test SQLite and ext4, not the
//     store. xDelete forgets the file's unsynced data (the file is gone).
//   * Temporary and transient files (no name, sub-journals) pass through
//     untracked: they never hold committed data.
//
// The cut itself: Arm(n) makes the n-th mutating call (xWrite, xTruncate,
// xSync, xDelete of a tracked file) after Arm fail with SQLITE_IOERR_* without
// doing anything, and every later call on a tracked file (reads included,
// and opens) fail the same way: the machine is off. The caller then closes
// every connection (the store's destructor) and calls PowerCut, which applies
// the cut to the files as above. Reopen through the normal VFS to recover.
//
// Thread safety: the VFS methods lock one mutex (SQLite may call them from
// several connections' threads); Arm, PowerCut and Reset are for the test's
// thread while no connection is open.
#ifndef KEYGATE_TESTS_POWERLOSS_VFS_H_
#define KEYGATE_TESTS_POWERLOSS_VFS_H_

#include <cstdint>
#include <memory>
#include <string>

namespace keygate::testing {

class PowerLossVfs {
 public:
  // What a PowerCut did.
  struct CutReport {
    int files = 0;           // files with unsynced data or size
    int kept = 0;            // sectors that reached the disk whole
    int dropped = 0;         // sectors whose durable content came back
    int torn = 0;            // sectors written in part
    int sizes_reverted = 0;  // files left at their durable size
  };

  // Wraps the current default VFS and registers this one (not as default).
  PowerLossVfs();
  // Unregisters it; the wrapped VFS is the default again.
  ~PowerLossVfs();
  PowerLossVfs(const PowerLossVfs&) = delete;
  PowerLossVfs& operator=(const PowerLossVfs&) = delete;

  // Makes this VFS the default (every sqlite3_open that names none uses it),
  // or gives the wrapped one that place back.
  void Install();
  void Uninstall();

  // Cuts the power at the `n`-th mutating call from now (n >= 1); 0 disarms.
  void Arm(std::uint64_t n);
  // The power is off (the armed call was reached).
  bool cut() const;
  // Mutating calls on tracked files since the last Arm, PowerCut or Reset
  // (also counted while disarmed: a dry run measures a workload with it).
  std::uint64_t mutating_calls() const;
  // xSync calls on tracked files since the last Arm, PowerCut or Reset.
  std::uint64_t syncs() const;

  // Applies the power cut (armed or not: a cut "now" when the armed call was
  // not reached) to every tracked file, as the seed chooses, deletes the
  // `-shm` files of the databases opened, and forgets all tracking. Fails
  // (returns false) if a tracked file is still open.
  bool PowerCut(std::uint64_t seed, CutReport* report);
  // Forgets all tracking without touching the files (a clean shutdown: what
  // was written reached the disk). False if a tracked file is still open.
  bool Reset();

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace keygate::testing

#endif  // KEYGATE_TESTS_POWERLOSS_VFS_H_
