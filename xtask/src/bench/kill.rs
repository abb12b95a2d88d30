//! B6: a writer opens a watched file under a kill policy (no revert) and
//! writes 4 KiB; how many bytes of the file changed (target: none).
use std::{fs, process::Command};

use anyhow::Result;

use super::{Agent, Bench, step, write_policy};

pub(super) fn measure(bench: &Bench) -> Result<Option<u64>> {
    step(format_args!(
        "B6 bytes written after an open a kill policy answers"
    ));
    let dir = bench.work.join("kill");
    fs::create_dir_all(&dir)?;
    let file = dir.join("guarded.conf");
    let original = vec![b'g'; 4096];
    fs::write(&file, &original)?;
    let policies = dir.join("policies");
    fs::create_dir_all(&policies)?;
    write_policy(
        &policies.join("kill.yaml"),
        &format!(
            "name: kill-writer\nmode: enforce\non:\n  file: {{ paths: [\"{}\"] }}\ndo: [kill]\n",
            file.display()
        ),
    )?;
    let agent = Agent::start(bench.bin, &policies, &dir.join("state"), 1)?;
    let script = format!(
        "import os\nfd = os.open({:?}, os.O_WRONLY)\nos.write(fd, b'E' * 4096)\n",
        file.display().to_string()
    );
    let status = Command::new("python3").args(["-c", &script]).status()?;
    agent.stop()?;
    let after = fs::read(&file)?;
    let changed = after.iter().zip(&original).filter(|(a, b)| a != b).count()
        + after.len().abs_diff(original.len());
    if status.success() {
        step(format_args!("B6 the writer was not killed"));
    }
    Ok(Some(changed as u64))
}
