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
    let at = |structure, field| offset(&btf, structure, field);
    Ok(KernelOffsets {
        task_real_parent: at("task_struct", "real_parent")?,
        task_tgid: at("task_struct", "tgid")?,
        task_exit_code: at("task_struct", "exit_code")?,
        task_mm: at("task_struct", "mm")?,
        mm_arg_start: at("mm_struct", "arg_start")?,
        mm_arg_end: at("mm_struct", "arg_end")?,
        task_files: at("task_struct", "files")?,
        files_fdt: at("files_struct", "fdt")?,
        fdtable_max_fds: at("fdtable", "max_fds")?,
        fdtable_fd: at("fdtable", "fd")?,
        file_inode: at("file", "f_inode")?,
        file_dentry: at("file", "f_path.dentry")?,
        inode_ino: at("inode", "i_ino")?,
        inode_sb: at("inode", "i_sb")?,
        inode_mode: at("inode", "i_mode")?,
        sb_dev: at("super_block", "s_dev")?,
        dentry_parent: at("dentry", "d_parent")?,
        dentry_inode: at("dentry", "d_inode")?,
        dentry_name: at("dentry", "d_name.name")?,
        file_mode: at("file", "f_mode")?,
        file_private: at("file", "private_data")?,
        socket_sk: at("socket", "sk")?,
        sk_family: at("sock", "__sk_common.skc_family")?,
        sk_daddr: at("sock", "__sk_common.skc_daddr")?,
        sk_saddr: at("sock", "__sk_common.skc_rcv_saddr")?,
        sk_dport: at("sock", "__sk_common.skc_dport")?,
        sk_num: at("sock", "__sk_common.skc_num")?,
        sk_v6_daddr: at("sock", "__sk_common.skc_v6_daddr")?,
        sk_v6_saddr: at("sock", "__sk_common.skc_v6_rcv_saddr")?,
        sk_protocol: at("sock", "sk_protocol")?,
        mm_exe_file: at("mm_struct", "exe_file")?,
        file_vfsmount: at("file", "f_path.mnt")?,
        vfsmount_root: at("vfsmount", "mnt_root")?,
        mount_mnt: at("mount", "mnt")?,
        mount_parent: at("mount", "mnt_parent")?,
        mount_mountpoint: at("mount", "mnt_mountpoint")?,
        dentry_name_len: at("dentry", "d_name.len")?,
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

/// Offset of `field` (dotted for nested structs, e.g. `f_path.dentry`) in
/// struct `structure`.
fn offset(btf: &Btf, structure: &'static str, field: &'static str) -> Result<u32, BtfError> {
    let missing = || BtfError::NoField { structure, field };
    let mut current = find_struct(btf, structure)?;
    let mut total = 0;
    let mut parts = field.split('.').peekable();
    while let Some(part) = parts.next() {
        let (off, ty) = member(btf, &current, part)?.ok_or_else(missing)?;
        total += off;
        if parts.peek().is_some() {
            current = match strip(btf, ty)? {
                Type::Struct(s) | Type::Union(s) => s,
                _ => return Err(missing()),
            };
        }
    }
    Ok(total)
}

/// Follows typedefs and qualifiers down to the underlying type.
fn strip(btf: &Btf, mut ty: Type) -> Result<Type, BtfError> {
    loop {
        ty = match &ty {
            Type::Typedef(t) => btf.resolve_chained_type(t),
            Type::Const(t) | Type::Volatile(t) | Type::Restrict(t) => btf.resolve_chained_type(t),
            _ => return Ok(ty),
        }
        .map_err(BtfError::Inconsistent)?;
    }
}

/// Byte offset and type of `field` in `st`, looking inside anonymous
/// structs and unions.
fn member(btf: &Btf, st: &Struct, field: &str) -> Result<Option<(u32, Type)>, BtfError> {
    for m in &st.members {
        let name = btf.resolve_name(m).unwrap_or_default();
        let here = m.bit_offset() / 8;
        if name == field {
            let ty = btf
                .resolve_chained_type(m)
                .map_err(BtfError::Inconsistent)?;
            return Ok(Some((here, ty)));
        }
        if name.is_empty() {
            let inner = btf
                .resolve_chained_type(m)
                .map_err(BtfError::Inconsistent)?;
            if let Type::Struct(s) | Type::Union(s) = inner
                && let Some((off, ty)) = member(btf, &s, field)?
            {
                return Ok(Some((here + off, ty)));
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
        assert!(offsets.file_dentry > 0 && offsets.dentry_name > 0);
        assert!(offsets.mm_exe_file > 0 && offsets.mount_parent > 0);
        // `len` sits after the 32-bit hash inside `qstr`, and `name` after both.
        assert_eq!(offsets.dentry_name, offsets.dentry_name_len + 4);
    }
}
