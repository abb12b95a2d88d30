//! Kernel struct offsets from BTF, so the probes carry no hard-coded layout.
use std::path::{Path, PathBuf};

use btf_rs::{Btf, Struct, Type};
use reflex_wire::KernelOffsets;

/// Where the running kernel publishes its BTF.
pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

/// Why an offset could not be resolved.
#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    /// The BTF file could not be read or parsed.
    #[error("cannot read kernel BTF from {path}")]
    Read {
        /// File that failed.
        path: PathBuf,
        /// Underlying error.
        #[source]
        source: btf_rs::Error,
    },
    /// The BTF has no struct of that name.
    #[error("kernel BTF has no struct {0}")]
    NoStruct(&'static str),
    /// The struct has no field of that name.
    #[error("kernel BTF struct {structure} has no field {field}")]
    NoField {
        /// Struct searched.
        structure: &'static str,
        /// Field missing.
        field: &'static str,
    },
    /// The BTF refers to a type it does not hold.
    #[error("kernel BTF is inconsistent")]
    Inconsistent(#[source] btf_rs::Error),
}

/// Resolves the struct offsets the probes need from the BTF at `path`.
/// Tracepoint record offsets are left at 0 for the caller to fill from tracefs.
pub fn resolve(path: &Path) -> Result<KernelOffsets, BtfError> {
    let btf = Btf::from_file(path).map_err(|source| BtfError::Read {
        path: path.to_owned(),
        source,
    })?;
    let task = find_struct(&btf, "task_struct")?;
    let mm = find_struct(&btf, "mm_struct")?;
    Ok(KernelOffsets {
        task_real_parent: offset(&btf, &task, "task_struct", "real_parent")?,
        task_tgid: offset(&btf, &task, "task_struct", "tgid")?,
        task_exit_code: offset(&btf, &task, "task_struct", "exit_code")?,
        task_mm: offset(&btf, &task, "task_struct", "mm")?,
        mm_arg_start: offset(&btf, &mm, "mm_struct", "arg_start")?,
        mm_arg_end: offset(&btf, &mm, "mm_struct", "arg_end")?,
        ..KernelOffsets::default()
    })
}

fn find_struct(btf: &Btf, name: &'static str) -> Result<Struct, BtfError> {
    btf.resolve_types_by_name(name)
        .map_err(|_| BtfError::NoStruct(name))?
        .into_iter()
        .find_map(|ty| match ty {
            Type::Struct(s) if !s.members.is_empty() => Some(s),
            _ => None,
        })
        .ok_or(BtfError::NoStruct(name))
}

fn offset(
    btf: &Btf,
    st: &Struct,
    structure: &'static str,
    field: &'static str,
) -> Result<u32, BtfError> {
    member_offset(btf, st, field)?.ok_or(BtfError::NoField { structure, field })
}

/// Byte offset of `field` in `st`, looking inside anonymous structs and unions.
fn member_offset(btf: &Btf, st: &Struct, field: &str) -> Result<Option<u32>, BtfError> {
    for member in &st.members {
        let name = btf.resolve_name(member).unwrap_or_default();
        let here = member.bit_offset() / 8;
        if name == field {
            return Ok(Some(here));
        }
        if name.is_empty() {
            let inner = btf
                .resolve_chained_type(member)
                .map_err(BtfError::Inconsistent)?;
            if let Type::Struct(s) | Type::Union(s) = inner
                && let Some(off) = member_offset(btf, &s, field)?
            {
                return Ok(Some(here + off));
            }
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_task_struct_fields_on_this_kernel() {
        let path = Path::new(VMLINUX_BTF);
        if !path.exists() {
            eprintln!("skipping: {VMLINUX_BTF} not present");
            return;
        }
        let offsets = resolve(path).expect("offsets");
        assert!(offsets.task_real_parent > 0);
        assert!(offsets.task_tgid > 0);
        assert!(offsets.mm_arg_end > offsets.mm_arg_start);
    }
}
