//! How many entries the kernel's watch maps are made with: what the policy
//! set covers when the agent starts, twice, plus room for globs to grow
//! into, at most the `watch:` settings. A kernel map cannot grow once
//! made: a reload, or a directory, that needs more finds the map full (an
//! error and `reflex_watch_refused_total{reason="map_full"}`; the files
//! past it are watched through fanotify and their directory) until the
//! agent is restarted.
use serde::Deserialize;

use super::WatchList;
use crate::{loader::WatchRoom, policy::PolicySet};

/// Default ceiling of `WATCHED` and `WATCHED_NAMES`.
pub const DEFAULT_MAX_FILES: u32 = 262_144;

/// Default ceiling of `WATCHED_DIRS`.
pub const DEFAULT_MAX_DIRS: u32 = 16_384;

/// Default of `watch.max_scan`.
pub const DEFAULT_MAX_SCAN: u32 = 100_000;

/// Files a glob may gain after start before its maps are full.
pub const FILE_HEADROOM: u32 = 65_536;

/// Directories likewise.
pub const DIR_HEADROOM: u32 = 1_024;

/// `watch:` in `reflex.yaml`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WatchConfig {
    /// Most files (and file names) the kernel maps hold (default 262 144).
    pub max_files: Option<u32>,
    /// Most directories the kernel map of directories holds (default 16 384).
    pub max_dirs: Option<u32>,
    /// Most covered files (and directories) one look through a directory,
    /// or one glob's walk at start, takes in at once (default 100 000).
    pub max_scan: Option<u32>,
}

/// The ceilings in force.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WatchBounds {
    /// Of `WATCHED` and `WATCHED_NAMES`.
    pub max_files: u32,
    /// Of `WATCHED_DIRS`.
    pub max_dirs: u32,
    /// Covered files one look (or walk) takes in at once.
    pub max_scan: u32,
}

impl Default for WatchBounds {
    fn default() -> Self {
        Self {
            max_files: DEFAULT_MAX_FILES,
            max_dirs: DEFAULT_MAX_DIRS,
            max_scan: DEFAULT_MAX_SCAN,
        }
    }
}

impl WatchConfig {
    /// The ceilings, defaults filled in.
    pub fn bounds(&self) -> WatchBounds {
        WatchBounds {
            max_files: self.max_files.unwrap_or(DEFAULT_MAX_FILES).max(1),
            max_dirs: self.max_dirs.unwrap_or(DEFAULT_MAX_DIRS).max(1),
            max_scan: self.max_scan.unwrap_or(DEFAULT_MAX_SCAN).max(1),
        }
    }
}

/// The room to make for `set`: what its file policies cover now (walked
/// as the watch list will), twice, plus the headroom, within `bounds`.
pub fn room(set: &PolicySet, bounds: WatchBounds) -> WatchRoom {
    let mut list = WatchList::new(None);
    list.set_max_scan(bounds.max_scan);
    list.configure(set);
    let (files, dirs, names) = list.counts();
    room_for(files, dirs, names, bounds)
}

/// The room for `files` identities, `dirs` directories and `names` name
/// hashes found.
pub fn room_for(files: usize, dirs: usize, names: usize, bounds: WatchBounds) -> WatchRoom {
    let grow = |found: usize, headroom: u32, max: u32| {
        u32::try_from(found)
            .unwrap_or(u32::MAX)
            .saturating_mul(2)
            .saturating_add(headroom)
            .min(max)
    };
    WatchRoom {
        files: grow(files, FILE_HEADROOM, bounds.max_files),
        dirs: grow(dirs, DIR_HEADROOM, bounds.max_dirs),
        names: grow(names, FILE_HEADROOM, bounds.max_files),
    }
}

impl WatchList {
    /// Identities, directories and name hashes the list holds.
    fn counts(&self) -> (usize, usize, usize) {
        (self.by_key.len(), self.dirs.len(), self.names.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_is_twice_what_is_found_plus_headroom_within_the_ceiling() {
        let bounds = WatchBounds::default();
        assert_eq!(
            room_for(0, 0, 0, bounds),
            WatchRoom {
                files: FILE_HEADROOM,
                dirs: DIR_HEADROOM,
                names: FILE_HEADROOM
            }
        );
        let big = room_for(200_000, 10_000, 150_000, bounds);
        assert_eq!(big.files, DEFAULT_MAX_FILES);
        assert_eq!(big.dirs, DEFAULT_MAX_DIRS);
        assert_eq!(big.names, DEFAULT_MAX_FILES);
        let small = WatchBounds {
            max_scan: DEFAULT_MAX_SCAN,
            max_files: 100,
            max_dirs: 10,
        };
        assert_eq!(
            room_for(3, 1, 3, small),
            WatchRoom {
                files: 100,
                dirs: 10,
                names: 100
            }
        );
    }
}
