//! The watch list's kernel side: the `WATCHED*` maps kept equal to the
//! list by difference, a full map counted and said, never taken for a
//! watched file. An entry the kernel refuses is kept aside and put in as
//! soon as another leaves.
use std::collections::{HashMap, HashSet};

use aya::maps::MapError;
use reflex_wire::{FileKey, file::watch, maps};

use crate::{loader::WatchMaps, telemetry::watch::WatchMetrics};

/// Which map, as the metrics' `map` label says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Which {
    Files,
    Dirs,
    Names,
}

impl Which {
    fn label(self) -> &'static str {
        match self {
            Which::Files => "files",
            Which::Dirs => "dirs",
            Which::Names => "names",
        }
    }

    fn map(self) -> &'static str {
        match self {
            Which::Files => maps::WATCHED,
            Which::Dirs => maps::WATCHED_DIRS,
            Which::Names => maps::WATCHED_NAMES,
        }
    }

    fn setting(self) -> &'static str {
        match self {
            Which::Dirs => "watch.max_dirs",
            Which::Files | Which::Names => "watch.max_files",
        }
    }
}

/// The maps and what is in them.
pub(super) struct Kernel {
    maps: WatchMaps,
    files: HashMap<FileKey, u32>,
    dirs: HashSet<FileKey>,
    names: HashSet<u64>,
    /// Entries refused (a full map), to put in when room is made.
    refused_files: HashMap<FileKey, u32>,
    refused_dirs: HashSet<FileKey>,
    refused_names: HashSet<u64>,
    /// Whether the map's fullness was said since it last took an entry.
    said_full: [bool; 3],
    metrics: Option<WatchMetrics>,
}

impl Kernel {
    pub(super) fn new(maps: WatchMaps) -> Self {
        Self {
            maps,
            files: HashMap::new(),
            dirs: HashSet::new(),
            names: HashSet::new(),
            refused_files: HashMap::new(),
            refused_dirs: HashSet::new(),
            refused_names: HashSet::new(),
            said_full: [false; 3],
            metrics: None,
        }
    }

    /// Shows use and capacity in `metrics` from now on.
    pub(super) fn with_metrics(&mut self, metrics: WatchMetrics) {
        let room = self.maps.room;
        for (which, capacity) in [
            (Which::Files, room.files),
            (Which::Dirs, room.dirs),
            (Which::Names, room.names),
        ] {
            metrics
                .capacity
                .with_label_values(&[which.label()])
                .set(capacity.into());
        }
        self.metrics = Some(metrics);
        self.publish();
    }

    /// The bits the kernel holds for `key`.
    pub(super) fn file_bits(&self, key: &FileKey) -> Option<u32> {
        self.files.get(key).copied()
    }

    /// Puts `key` in `WATCHED` with `bits` (a refusal is counted, said and
    /// kept aside).
    pub(super) fn set_file(&mut self, key: FileKey, bits: u32, path: &str) {
        if self.files.get(&key) == Some(&bits) {
            return;
        }
        match self.maps.files.insert(key, bits, 0) {
            Ok(()) => {
                self.files.insert(key, bits);
                self.refused_files.remove(&key);
                self.said_full[0] = false;
            }
            Err(err) => {
                if self.refuse(Which::Files, &err, path) {
                    self.refused_files.insert(key, bits);
                }
            }
        }
    }

    /// Takes `key` out of `WATCHED`; a refused entry takes its place.
    pub(super) fn drop_file(&mut self, key: &FileKey) {
        self.refused_files.remove(key);
        if self.files.remove(key).is_none() {
            return;
        }
        let _ = self.maps.files.remove(key);
        if let Some((&next, &bits)) = self.refused_files.iter().next() {
            self.set_file(next, bits, "(waiting for room)");
        }
    }

    /// Puts the name hash `hash` in `WATCHED_NAMES`.
    pub(super) fn set_name(&mut self, hash: u64, path: &str) {
        if self.names.contains(&hash) {
            return;
        }
        match self.maps.names.insert(hash, watch::REPORT, 0) {
            Ok(()) => {
                self.names.insert(hash);
                self.refused_names.remove(&hash);
                self.said_full[2] = false;
            }
            Err(err) => {
                if self.refuse(Which::Names, &err, path) {
                    self.refused_names.insert(hash);
                }
            }
        }
    }

    /// Takes `hash` out of `WATCHED_NAMES`; a refused entry takes its place.
    pub(super) fn drop_name(&mut self, hash: u64) {
        self.refused_names.remove(&hash);
        if !self.names.remove(&hash) {
            return;
        }
        let _ = self.maps.names.remove(&hash);
        if let Some(&next) = self.refused_names.iter().next() {
            self.set_name(next, "(waiting for room)");
        }
    }

    fn set_dir(&mut self, key: FileKey, path: &str) {
        match self.maps.dirs.insert(key, watch::REPORT, 0) {
            Ok(()) => {
                self.dirs.insert(key);
                self.refused_dirs.remove(&key);
                self.said_full[1] = false;
            }
            Err(err) => {
                if self.refuse(Which::Dirs, &err, path) {
                    self.refused_dirs.insert(key);
                }
            }
        }
    }

    /// Makes the maps hold `files`, `dirs` and `names`, by difference:
    /// what leaves goes first, so what comes finds the room.
    pub(super) fn sync(
        &mut self,
        files: HashMap<FileKey, u32>,
        dirs: &HashMap<FileKey, String>,
        names: &HashMap<u64, Vec<String>>,
    ) {
        self.refused_files.retain(|k, _| files.contains_key(k));
        self.refused_dirs.retain(|k| dirs.contains_key(k));
        self.refused_names.retain(|h| names.contains_key(h));
        let gone: Vec<FileKey> = self
            .files
            .keys()
            .filter(|k| !files.contains_key(k))
            .copied()
            .collect();
        for key in gone {
            self.drop_file(&key);
        }
        let gone: Vec<FileKey> = self
            .dirs
            .iter()
            .filter(|k| !dirs.contains_key(k))
            .copied()
            .collect();
        for key in gone {
            self.dirs.remove(&key);
            let _ = self.maps.dirs.remove(&key);
        }
        let gone: Vec<u64> = self
            .names
            .iter()
            .filter(|h| !names.contains_key(h))
            .copied()
            .collect();
        for hash in gone {
            self.drop_name(hash);
        }
        for (key, bits) in files {
            self.set_file(key, bits, "(policy set)");
        }
        for (key, path) in dirs {
            if !self.dirs.contains(key) {
                self.set_dir(*key, path);
            }
        }
        for (hash, paths) in names {
            if !self.names.contains(hash) {
                self.set_name(*hash, paths.first().map_or("", String::as_str));
            }
        }
        self.publish();
    }

    /// Counts and says a refused entry; whether it is worth trying again
    /// when room is made (the map was full).
    fn refuse(&mut self, which: Which, err: &MapError, path: &str) -> bool {
        let full = matches!(err, MapError::SyscallError(e) if e.io_error.raw_os_error() == Some(libc::E2BIG));
        let reason = if full { "map_full" } else { "error" };
        if let Some(m) = &self.metrics {
            m.refused.with_label_values(&[reason]).inc();
        }
        let index = which as usize;
        if !full {
            tracing::error!(%err, map = which.map(), path, "updating the kernel watch list");
        } else if !self.said_full[index] {
            self.said_full[index] = true;
            tracing::error!(
                map = which.map(),
                capacity = self.capacity(which),
                setting = which.setting(),
                path,
                "kernel watch map full: files past it are watched through fanotify and their directory only (changes are still seen and answered; an enforcing kill no longer stops their open in the kernel); raise the setting and restart"
            );
        } else {
            tracing::debug!(map = which.map(), path, "kernel watch map full");
        }
        full
    }

    fn capacity(&self, which: Which) -> u32 {
        match which {
            Which::Files => self.maps.room.files,
            Which::Dirs => self.maps.room.dirs,
            Which::Names => self.maps.room.names,
        }
    }

    /// Sets the use gauges.
    pub(super) fn publish(&self) {
        let Some(m) = &self.metrics else {
            return;
        };
        for (which, used) in [
            (Which::Files, self.files.len()),
            (Which::Dirs, self.dirs.len()),
            (Which::Names, self.names.len()),
        ] {
            m.entries
                .with_label_values(&[which.label()])
                .set(used as i64);
        }
    }
}
