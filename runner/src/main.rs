//! `mpaudit`: run forked batch jobs under libmpaudit.so, supervise them and
//! report rogue writers. See `mpaudit --help` and docs/.

mod cli;
mod demangle;
mod duration;
mod events;
mod memory;
mod procs;
mod supervise;
mod jobfile;
mod libpath;
mod plan;
mod preflight;
mod workers;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Parser;

use cli::{Cli, Command};

/// Exit status 2: usage or job-file error, nothing was started.
pub const EXIT_USAGE: u8 = 2;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { EXIT_USAGE } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    match run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(msg) => {
            eprintln!("mpaudit: error: {msg}");
            ExitCode::from(EXIT_USAGE)
        }
    }
}

/// Usage errors come back as `Err(one line)`; everything else as a code.
fn run(cli: Cli) -> Result<u8, String> {
    match cli.command {
        Command::LibPath(a) => {
            let p = libpath::find_here(a.preload.as_deref())?;
            println!("{}", p.display());
            Ok(0)
        }
        Command::Check(a) => {
            let (plan, program) = prepare_job(&a.job, &a.opts)?;
            let lib = libpath::find_here(a.opts.preload.as_deref());
            print!("{}", plan.render(lib.as_deref().map_err(|e| e.as_str()), Some(&program)));
            Ok(0)
        }
        _ => Err("not implemented yet".into()),
    }
}

fn env_map() -> BTreeMap<String, String> {
    std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .collect()
}

fn cwd() -> Result<PathBuf, String> {
    std::env::current_dir().map_err(|e| format!("cannot read the current directory: {e}"))
}

fn context() -> Result<plan::Context, String> {
    Ok(plan::Context { cwd: cwd()?, facts: workers::probe(&env_map()) })
}

/// Reads, parses and validates a job file into a plan and the program path.
fn prepare_job(job: &Path, opts: &cli::RunOpts) -> Result<(plan::Plan, PathBuf), String> {
    let ctx = context()?;
    let path = plan::resolve(&ctx.cwd, job);
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", job.display()))?;
    let file = jobfile::parse(&text).map_err(|e| e.render(&job.display().to_string()))?;
    let source = plan::Source::JobFile { path, file: Box::new(file) };
    let plan = plan::build(&source, opts, &ctx)?;
    let program = preflight::check(&plan, ctx.facts.env.get("PATH").map(String::as_str))?;
    Ok((plan, program))
}
