//! The compiled object holds exactly the maps and programs `reflex_wire`
//! names, in the sections their program types need. The probes check their
//! own identifiers against `reflex_wire` when they compile; this checks what
//! the object exports under them, read from its ELF symbol table.
use std::collections::BTreeSet;

use reflex_wire::{maps, offsets, programs};

use super::PROBES;

/// One symbol: its name, the name of its section, and whether it is a
/// global function.
struct Symbol<'a> {
    name: &'a str,
    section: &'a str,
    global_function: bool,
}

fn u16_at(b: &[u8], at: usize) -> usize {
    u16::from_le_bytes(b[at..at + 2].try_into().unwrap()).into()
}

fn u32_at(b: &[u8], at: usize) -> usize {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap()) as usize
}

fn u64_at(b: &[u8], at: usize) -> usize {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap()) as usize
}

/// The NUL-terminated string at `at`.
fn str_at(b: &[u8], at: usize) -> &str {
    let end = b[at..].iter().position(|&c| c == 0).unwrap();
    std::str::from_utf8(&b[at..at + end]).unwrap()
}

/// The symbols of a little-endian ELF64 object (the BPF target's `bpfel`).
fn symbols(elf: &[u8]) -> Vec<Symbol<'_>> {
    const SHT_SYMTAB: usize = 2;
    const STT_FUNC: u8 = 2;
    const STB_GLOBAL: u8 = 1;
    assert_eq!(
        &elf[..6],
        b"\x7fELF\x02\x01",
        "a little-endian ELF64 object"
    );
    let (shoff, shentsize, shnum) = (u64_at(elf, 0x28), u16_at(elf, 0x3a), u16_at(elf, 0x3c));
    let section = |i: usize| shoff + i * shentsize;
    let names = u64_at(elf, section(u16_at(elf, 0x3e)) + 24);
    let section_name = |i: usize| str_at(elf, names + u32_at(elf, section(i)));
    let symtab = (0..shnum)
        .map(section)
        .find(|&s| u32_at(elf, s + 4) == SHT_SYMTAB)
        .expect("a symbol table");
    let strings = u64_at(elf, section(u32_at(elf, symtab + 40)) + 24);
    let (start, size) = (u64_at(elf, symtab + 24), u64_at(elf, symtab + 32));
    (start..start + size)
        .step_by(24)
        .map(|sym| {
            let info = elf[sym + 4];
            let shndx = u16_at(elf, sym + 6);
            Symbol {
                name: str_at(elf, strings + u32_at(elf, sym)),
                section: if (1..shnum).contains(&shndx) {
                    section_name(shndx)
                } else {
                    ""
                },
                global_function: info & 0xf == STT_FUNC && info >> 4 == STB_GLOBAL,
            }
        })
        .collect()
}

#[test]
fn the_object_holds_exactly_the_maps_reflex_wire_names() {
    let in_object: BTreeSet<&str> = symbols(PROBES)
        .iter()
        .filter(|s| s.section == "maps")
        .map(|s| s.name)
        .collect();
    assert_eq!(in_object, maps::ALL.into_iter().collect());
}

#[test]
fn the_object_holds_exactly_the_programs_reflex_wire_names() {
    let symbols = symbols(PROBES);
    let in_object: BTreeSet<&str> = symbols
        .iter()
        .filter(|s| s.global_function && s.section != ".text")
        .map(|s| s.name)
        .collect();
    assert_eq!(in_object, programs::ALL.into_iter().collect());
    let section = |name: &str| symbols.iter().find(|s| s.name == name).unwrap().section;
    for (category, tracepoint) in [
        (programs::SCHED, programs::SCHED_PROCESS_EXEC),
        (programs::SCHED, programs::SCHED_PROCESS_EXIT),
        (programs::SCHED, programs::SCHED_PROCESS_FORK),
        (programs::TASK, programs::TASK_NEWTASK),
    ] {
        assert_eq!(
            section(tracepoint),
            format!("tracepoint/{category}/{tracepoint}")
        );
    }
    for dispatcher in [programs::SYS_ENTER, programs::SYS_EXIT] {
        assert_eq!(section(dispatcher), format!("raw_tp/{dispatcher}"));
    }
    assert!(
        symbols.iter().any(|s| s.name == offsets::GLOBAL),
        "the object has no global {}",
        offsets::GLOBAL
    );
}
