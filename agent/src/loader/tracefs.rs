//! tracefs: where tracepoint ids and record layouts live. Mounted if absent.
use std::{
    fs, io,
    path::{Path, PathBuf},
};

/// Places tracefs is usually found, in the order aya looks; the agent
/// mounts it at the first when it is absent.
pub const CANDIDATES: [&str; 2] = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"];

/// Why tracefs could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TracefsError {
    /// Not mounted, and mounting it failed.
    #[error("tracefs is not mounted and mounting it at {path} failed")]
    Mount {
        /// Mount point tried.
        path: PathBuf,
        /// Underlying error.
        #[source]
        source: nix::Error,
    },
    /// A tracepoint format file could not be read.
    #[error("cannot read tracepoint format {path}")]
    Format {
        /// File that failed.
        path: PathBuf,
        /// Underlying error.
        #[source]
        source: io::Error,
    },
    /// A field the probes need is missing from the tracepoint record.
    #[error("tracepoint {tracepoint} has no field {field}")]
    NoField {
        /// `category/name`.
        tracepoint: String,
        /// Field missing.
        field: &'static str,
    },
}

/// The mounted tracefs root, if any.
pub fn mounted() -> Option<PathBuf> {
    CANDIDATES
        .iter()
        .map(Path::new)
        .find(|p| p.join("events").is_dir())
        .map(Path::to_owned)
}

/// Returns the tracefs root, mounting it at `/sys/kernel/tracing` when no
/// mounted tracefs is found. Returns whether this call mounted it.
pub fn ensure_mounted() -> Result<(PathBuf, bool), TracefsError> {
    if let Some(root) = mounted() {
        return Ok((root, false));
    }
    let path = PathBuf::from(CANDIDATES[0]);
    nix::mount::mount(
        Some("tracefs"),
        &path,
        Some("tracefs"),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    )
    .map_err(|source| TracefsError::Mount {
        path: path.clone(),
        source,
    })?;
    Ok((path, true))
}

/// Offset of `field` in the record of tracepoint `category/name`, or `None`
/// when this kernel's record has no such field.
pub fn field_offset(
    root: &Path,
    category: &str,
    name: &str,
    field: &'static str,
) -> Result<Option<u32>, TracefsError> {
    let path = root.join("events").join(category).join(name).join("format");
    let text = fs::read_to_string(&path).map_err(|source| TracefsError::Format {
        path: path.clone(),
        source,
    })?;
    Ok(parse_field_offset(&text, field))
}

/// Like [`field_offset`] but a missing field is an error.
pub fn required_field_offset(
    root: &Path,
    category: &str,
    name: &str,
    field: &'static str,
) -> Result<u32, TracefsError> {
    field_offset(root, category, name, field)?.ok_or_else(|| TracefsError::NoField {
        tracepoint: format!("{category}/{name}"),
        field,
    })
}

/// Fills the tracepoint record offsets of `offsets` the probes read.
pub fn record_offsets(
    root: &Path,
    offsets: &mut reflex_wire::KernelOffsets,
) -> Result<(), TracefsError> {
    offsets.tp_exec_filename =
        required_field_offset(root, "sched", "sched_process_exec", "filename")?;
    offsets.tp_exit_group_dead =
        field_offset(root, "sched", "sched_process_exit", "group_dead")?.unwrap_or(0);
    offsets.tp_fork_child_pid =
        required_field_offset(root, "sched", "sched_process_fork", "child_pid")?;
    offsets.tp_newtask_pid = required_field_offset(root, "task", "task_newtask", "pid")?;
    offsets.tp_newtask_clone_flags =
        required_field_offset(root, "task", "task_newtask", "clone_flags")?;
    Ok(())
}

/// Finds `field` in a tracepoint `format` file and returns its `offset:`.
fn parse_field_offset(format: &str, field: &str) -> Option<u32> {
    format.lines().find_map(|line| {
        let mut parts = line.trim().split(';').map(str::trim);
        let decl = parts.next()?.strip_prefix("field:")?;
        let ident = decl.rsplit(' ').next()?;
        let ident = ident.split('[').next()?;
        if ident != field {
            return None;
        }
        parts.find_map(|p| p.strip_prefix("offset:")?.parse().ok())
    })
}

#[cfg(test)]
mod tests {
    use super::parse_field_offset;

    const EXEC: &str = "name: sched_process_exec\nID: 365\nformat:\n\
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n\
\tfield:__data_loc char[] filename;\toffset:8;\tsize:4;\tsigned:0;\n\
\tfield:pid_t pid;\toffset:12;\tsize:4;\tsigned:1;\n\
\tfield:char comm[16];\toffset:16;\tsize:16;\tsigned:0;\n";

    #[test]
    fn finds_fields_by_name() {
        assert_eq!(parse_field_offset(EXEC, "filename"), Some(8));
        assert_eq!(parse_field_offset(EXEC, "pid"), Some(12));
        assert_eq!(parse_field_offset(EXEC, "comm"), Some(16));
        assert_eq!(parse_field_offset(EXEC, "group_dead"), None);
    }
}
