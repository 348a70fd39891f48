//! The PyTorch side of `vlk bench --vs torch`: scripts/torch_bench.py run as a child process,
//! spoken to in JSON lines (setup a workload, time N repeats), so its timings interleave with
//! vlk's in one run.

use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use vlk::{Device, Error, Result};

pub struct TorchPeer {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    /// The script's greeting: torch version, threads, device (and GPU name).
    pub hello: Value,
}

/// scripts/torch_bench.py from the working directory, else next to the vlk binary (as the GPU
/// bundle lays it out).
pub fn default_script() -> Option<PathBuf> {
    let beside_exe = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(|d| d.join("torch_bench.py")));
    [Some(PathBuf::from("scripts/torch_bench.py")), beside_exe]
        .into_iter()
        .flatten()
        .find(|p| p.is_file())
}

impl TorchPeer {
    pub fn start(python: &str, script: &Path, device: Device, threads: usize, compile: bool) -> Result<Self> {
        let dev = match device {
            Device::Cpu => "cpu",
            Device::Cuda(_) => "cuda",
            other => return Err(Error::msg(format!("bench --vs torch: compares on cpu or cuda, not {other}"))),
        };
        let mut cmd = Command::new(python);
        cmd.arg("-u")
            .arg(script)
            .args(["--serve", "--device", dev, "--threads", &threads.to_string()]);
        if compile {
            cmd.arg("--compile");
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| {
                Error::msg(format!(
                    "bench --vs torch: cannot run `{python} {}`: {e}; pass --python PATH (a python with torch)",
                    script.display()
                ))
            })?;
        let (stdin, stdout) = match (child.stdin.take(), child.stdout.take()) {
            (Some(i), Some(o)) => (i, BufReader::new(o)),
            _ => return Err(Error::msg("bench --vs torch: no pipes to the python process")),
        };
        let mut peer = TorchPeer {
            child,
            stdin,
            stdout,
            hello: Value::Null,
        };
        peer.hello = peer.read()?;
        Ok(peer)
    }

    fn read(&mut self) -> Result<Value> {
        let mut line = String::new();
        let n = self
            .stdout
            .read_line(&mut line)
            .map_err(|e| Error::msg(format!("bench --vs torch: reading from python: {e}")))?;
        if n == 0 {
            return Err(Error::msg("bench --vs torch: the python process exited (see its messages above)"));
        }
        let v: Value =
            serde_json::from_str(&line).map_err(|e| Error::msg(format!("bench --vs torch: python sent {:?}: {e}", line.trim())))?;
        if v["ok"] != json!(true) {
            return Err(Error::msg(format!("torch: {}", v["error"].as_str().unwrap_or("failed"))));
        }
        Ok(v)
    }

    fn request(&mut self, req: Value) -> Result<Value> {
        writeln!(self.stdin, "{req}")
            .and_then(|_| self.stdin.flush())
            .map_err(|e| Error::msg(format!("bench --vs torch: writing to python: {e}")))?;
        self.read()
    }

    /// Builds the workload in PyTorch and warms it up; the names of the implementations timed.
    pub fn setup(&mut self, workload: &Value) -> Result<Vec<String>> {
        let v = self.request(json!({"cmd": "setup", "workload": workload}))?;
        Ok(v["impls"]
            .as_array()
            .map(|a| a.iter().filter_map(|s| s.as_str().map(String::from)).collect())
            .unwrap_or_default())
    }

    /// `repeats` timings in ms for each implementation.
    pub fn time(&mut self, repeats: usize) -> Result<Vec<(String, Vec<f64>)>> {
        let v = self.request(json!({"cmd": "time", "repeats": repeats}))?;
        let ms = v["ms"]
            .as_object()
            .ok_or_else(|| Error::msg("bench --vs torch: no timings in python's reply"))?;
        Ok(ms
            .iter()
            .map(|(k, s)| {
                (
                    k.clone(),
                    s.as_array()
                        .map(|a| a.iter().filter_map(Value::as_f64).collect())
                        .unwrap_or_default(),
                )
            })
            .collect())
    }
}

impl Drop for TorchPeer {
    fn drop(&mut self) {
        // The script may be busy timing: stop it rather than wait, and reap it so no zombie is left.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
