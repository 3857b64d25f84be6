//! Commands on a project folder, no server: init, check, schema, backup and purge, demo,
//! version, completions, and a closed stdout.

use super::*;

#[test]
fn init_creates_a_project_that_checks_clean() {
    let dir = temp_dir("init");
    let proj = dir.join("proj");
    let out = Command::new(bin()).arg("init").arg(&proj).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(proj.join("charter.yaml").exists());
    let out = Command::new(bin())
        .arg("check")
        .arg(&proj)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "stdout: {} stderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // A second init refuses to overwrite.
    let again = Command::new(bin()).arg("init").arg(&proj).output().unwrap();
    assert_eq!(again.status.code(), Some(1));
    let _ = std::fs::remove_dir_all(&dir);
}

/// `check` warns (and still succeeds) about a webhook charter that can recognise no
/// redelivery: no `dedupe:` and a scheme without a delivery id; a Stripe charter (body `id`)
/// and one with `dedupe:` draw no warning.
#[test]
fn check_warns_about_a_webhook_charter_without_a_delivery_id() {
    let dir = temp_dir("dedupe-warn");
    write(
        &dir,
        "charter.yaml",
        "connectors:\n  crm:\n    type: http\n    base_url: http://127.0.0.1:9\n    allow_private: true\n",
    );
    write(&dir, "secrets/hook", "s3cret");
    let charter_file = |name: &str, verify: &str, dedupe: &str| {
        format!(
            "name: {name}\ndescription: d\nowner: o@example.test\nmaintainer: m@example.test\nsystem_of_record: crm\nmode: shadow\nuses: [crm]\ntrigger:\n  webhook: {{ path: /hooks/{name}, verify: {verify} }}\n{dedupe}routes:\n  - when: \"true\"\n    do: [note]\nactions:\n  note: {{ log: \"seen\", approval: auto }}\nescalation: {{ to: ops }}\nmeasure: {{ success: [seen] }}\n"
        )
    };
    write(
        &dir,
        "charters/plain.yaml",
        &charter_file("plain", "none", ""),
    );
    write(
        &dir,
        "charters/stripe.yaml",
        &charter_file(
            "stripe",
            "{ preset: stripe, secret: file:secrets/hook }",
            "",
        ),
    );
    write(
        &dir,
        "charters/keyed.yaml",
        &charter_file("keyed", "none", "  dedupe: \"{{ payload.id }}\"\n"),
    );
    let (code, out, err) = charter(&["check", dir.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let warnings: Vec<&str> = out.lines().filter(|l| l.contains(": warning: ")).collect();
    assert_eq!(warnings.len(), 1, "{out}");
    assert!(
        warnings[0]
            .starts_with("charters/plain.yaml:8:1: warning: charter `plain` has no `dedupe:`"),
        "{out}"
    );
    let (code, out, _) = charter(&["check", dir.to_str().unwrap(), "--json"]);
    assert_eq!(code, 0);
    let v: Value = serde_json::from_str(&out).unwrap();
    let problems = v["problems"].as_array().cloned().unwrap_or_default();
    assert_eq!(problems.len(), 1, "{v}");
    assert_eq!(problems[0]["severity"], "warning", "{v}");
    assert_eq!(problems[0]["line"], 8, "{v}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn backup_and_purge_from_the_command_line() {
    let dir = temp_dir("backup");
    let proj = dir.join("proj");
    let run = |args: &[&std::ffi::OsStr]| {
        // The new project's webhook secret is read from the environment at load.
        let out = Command::new(bin())
            .args(args)
            .env("SUPPORT_WEBHOOK_SECRET", "backup-test-secret")
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let (code, err) = run(&["init".as_ref(), proj.as_os_str()]);
    assert_eq!(code, Some(0), "{err}");
    // No store yet: said so.
    let copy = dir.join("copy.db");
    let (code, err) = run(&["backup".as_ref(), copy.as_os_str(), proj.as_os_str()]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("no store at"), "{err}");
    let (code, err) = run(&["migrate".as_ref(), proj.as_os_str()]);
    assert_eq!(code, Some(0), "{err}");
    let (code, err) = run(&["backup".as_ref(), copy.as_os_str(), proj.as_os_str()]);
    assert_eq!(code, Some(0), "{err}");
    assert!(err.contains("backed up") && err.contains("bytes"), "{err}");
    // The copy is a store at the current schema.
    let (code, err) = run(&[
        "migrate".as_ref(),
        proj.as_os_str(),
        "--store".as_ref(),
        copy.as_os_str(),
    ]);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        err.contains(&format!(
            "at schema version {}",
            charter_store::sqlite::SCHEMA_VERSION
        )),
        "{err}"
    );
    // It never overwrites, and PostgreSQL is not its business.
    let (code, err) = run(&["backup".as_ref(), copy.as_os_str(), proj.as_os_str()]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("already exists"), "{err}");
    let (code, err) = run(&[
        "backup".as_ref(),
        dir.join("pg.db").as_os_str(),
        proj.as_os_str(),
        "--store".as_ref(),
        "postgres://postgres@127.0.0.1:5432/postgres".as_ref(),
    ]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("pg_dump"), "{err}");

    // `charter purge` (the purge itself is in the store's conformance suite, on every
    // backend): it says what it removed, and refuses a cut-off it cannot read or one in the
    // future.
    let (code, err) = run(&[
        "purge".as_ref(),
        "--before".as_ref(),
        "90d".as_ref(),
        proj.as_os_str(),
    ]);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        err.contains("purged 0 event(s) with 0 run(s), and 0 rejected payload(s)"),
        "{err}"
    );
    for (before, says) in [("2999-01-01", "in the future"), ("soon", "is not a time")] {
        let (code, err) = run(&[
            "purge".as_ref(),
            "--before".as_ref(),
            before.as_ref(),
            proj.as_os_str(),
        ]);
        assert_eq!(code, Some(2), "{err}");
        assert!(err.contains(says), "{err}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn check_lists_every_problem_with_file_line_and_column() {
    let dir = temp_dir("check");
    let proj = dir.join("proj");
    assert!(
        Command::new(bin())
            .arg("init")
            .arg(&proj)
            .status()
            .unwrap()
            .success()
    );
    let charter = std::fs::read_to_string(proj.join("charters/support-triage.yaml")).unwrap();
    // Two problems in one file: an unknown key and an action without an approval policy.
    let broken = charter
        .replacen("owner:", "bogus_key: 1\nowner:", 1)
        .replace("approval: auto", "");
    write(&proj, "charters/support-triage.yaml", &broken);
    let out = Command::new(bin())
        .arg("check")
        .arg(&proj)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(lines.len() >= 2, "all problems listed at once: {stdout}");
    for l in &lines {
        let mut parts = l.splitn(4, ':');
        assert_eq!(parts.next(), Some("charters/support-triage.yaml"), "{l}");
        assert!(
            parts.next().unwrap().parse::<usize>().is_ok(),
            "line number in {l}"
        );
        assert!(
            parts.next().unwrap().parse::<usize>().is_ok(),
            "column in {l}"
        );
    }
    assert!(stdout.contains("bogus_key"), "{stdout}");
    assert!(stdout.contains("approval"), "{stdout}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn schema_writes_the_committed_schemas_and_reference() {
    let dir = temp_dir("schema");
    let out = Command::new(bin())
        .args(["schema", "--docs"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    for rel in [
        "schema/charter.yaml.schema.json",
        "schema/charter.schema.json",
        "src/reference.md",
    ] {
        let written = std::fs::read_to_string(dir.join(rel)).unwrap();
        let committed = std::fs::read_to_string(repo.join("docs").join(rel)).unwrap();
        assert!(
            written == committed,
            "{rel}: `charter schema` differs from docs/{rel}"
        );
    }
    // One schema on stdout: valid JSON, the charter file's.
    let out = Command::new(bin())
        .args(["schema", "charter"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        v["properties"]["trigger"]["properties"]["events"].is_object(),
        "{v}"
    );
    let out = Command::new(bin())
        .args(["schema", "nonsense"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "an unknown schema is a usage error"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn demo_runs_to_completion_with_once() {
    let dir = temp_dir("demo");
    let out = Command::new(bin())
        .args(["demo", "--once", "--listen", "127.0.0.1:0", "--dir"])
        .arg(dir.join("p"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "stdout: {stdout}\nstderr: {stderr}");
    assert!(
        stdout.lines().count() >= 2,
        "one line per processed sample: {stdout}"
    );
    assert!(
        !stdout.contains("pending") && !stdout.contains("processing"),
        "{stdout}"
    );
    // The refund waits for a reviewer and the ticket no rule decides is escalated; both
    // are listed with the inbox's URL.
    assert!(stdout.contains("/inbox"), "{stdout}");
    let approval = stdout
        .lines()
        .find(|l| l.starts_with("approval "))
        .unwrap_or_else(|| panic!("no approval listed: {stdout}"));
    assert!(
        approval.contains("issue_refund") && approval.contains("support-leads"),
        "{approval}"
    );
    let escalation = stdout
        .lines()
        .find(|l| l.starts_with("escalation "))
        .unwrap_or_else(|| panic!("no escalation listed: {stdout}"));
    assert!(escalation.contains("support-triage"), "{escalation}");
    assert_eq!(
        stdout
            .lines()
            .filter(|l| l.starts_with("approval "))
            .count(),
        1
    );
    assert_eq!(
        stdout
            .lines()
            .filter(|l| l.starts_with("escalation "))
            .count(),
        1
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// `charter --version` names the git commit it was built from and the build date.
#[test]
fn version_names_the_commit_and_the_build_date() {
    let (code, stdout, stderr) = charter(&["--version"]);
    assert_eq!(code, 0, "{stderr}");
    let line = stdout.trim();
    let rest = line
        .strip_prefix(&format!("charter {} (commit ", env!("CARGO_PKG_VERSION")))
        .unwrap_or_else(|| panic!("{line}"));
    let (commit, rest) = rest
        .split_once(", built ")
        .unwrap_or_else(|| panic!("{line}"));
    let date = rest.strip_suffix(')').unwrap_or_else(|| panic!("{line}"));
    let bytes = date.as_bytes();
    assert!(
        date.len() == 10
            && bytes[4] == b'-'
            && bytes[7] == b'-'
            && date.replace('-', "").chars().all(|c| c.is_ascii_digit()),
        "build date {date:?} in {line}"
    );
    // Built from this checkout: the commit is its HEAD (when git can tell).
    let head = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    match head {
        Some(head) => assert_eq!(commit, head, "{line}"),
        None => assert_eq!(commit, "unknown", "{line}"),
    }
}

/// `charter completions <shell>` prints a completion script that knows the subcommands.
#[test]
fn completions_are_printed_for_each_shell() {
    let (code, bash, stderr) = charter(&["completions", "bash"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(bash.contains("_charter()"), "{bash}");
    for sub in ["serve", "events", "completions", "export-corrections"] {
        assert!(bash.contains(sub), "bash completion lacks {sub}");
    }
    let (code, zsh, _) = charter(&["completions", "zsh"]);
    assert_eq!(code, 0);
    assert!(zsh.starts_with("#compdef charter"), "{zsh}");
    let (code, fish, _) = charter(&["completions", "fish"]);
    assert_eq!(code, 0);
    assert!(fish.contains("complete -c charter"), "{fish}");
    let (code, _, stderr) = charter(&["completions", "tcsh"]);
    assert_eq!(code, 2, "an unknown shell is a usage error: {stderr}");
}

/// A reader that has gone away (`charter runs | head`) ends the command quietly with status
/// 0: stdout is a pipe whose read end is closed before the command writes.
#[test]
fn a_closed_stdout_ends_the_command_quietly() {
    let dir = temp_dir("pipe");
    let proj = dir.join("proj");
    assert!(
        Command::new(bin())
            .arg("init")
            .arg(&proj)
            .output()
            .unwrap()
            .status
            .success()
    );
    for args in [
        vec!["completions".to_string(), "bash".to_string()],
        vec!["check".to_string(), proj.display().to_string()],
        vec!["--help".to_string()],
    ] {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let out = Command::new(bin())
            .args(&args)
            .env("SUPPORT_WEBHOOK_SECRET", "x")
            .stdout(writer)
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !stderr.contains("panicked") && !stderr.contains("Broken pipe"),
            "{args:?}: {stderr}"
        );
        if args[0] != "--help" {
            assert_eq!(out.status.code(), Some(0), "{args:?}: {stderr}");
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// `check` goes beyond the text: the embedded stage's examples file (undeclared labels, a
/// wrong delimiter, a missing file) is an error at its file:line, and an unset `env:`
/// secret is a warning, an error with `--strict`.
#[test]
fn check_reads_examples_and_the_environment() {
    let dir = temp_dir("check-io");
    let proj = dir.join("proj");
    assert!(
        Command::new(bin())
            .arg("init")
            .arg(&proj)
            .output()
            .unwrap()
            .status
            .success()
    );
    let check = |strict: bool, secret: Option<&str>| {
        let mut cmd = Command::new(bin());
        cmd.arg("check")
            .arg(&proj)
            .env_remove("SUPPORT_WEBHOOK_SECRET");
        if strict {
            cmd.arg("--strict");
        }
        if let Some(s) = secret {
            cmd.env("SUPPORT_WEBHOOK_SECRET", s);
        }
        let out = cmd.output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    // The unset secret, where the charter names it.
    let (code, stdout, stderr) = check(false, None);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(
        stdout.contains("charters/support-triage.yaml:12:50: warning:")
            && stdout.contains(": warning: secret env:SUPPORT_WEBHOOK_SECRET is not set here"),
        "{stdout}"
    );
    assert!(stderr.contains("1 warning(s)"), "{stderr}");
    let (code, stdout, _) = check(true, None);
    assert_eq!(code, Some(1), "{stdout}");
    assert!(
        stdout.contains(": error: secret env:SUPPORT_WEBHOOK_SECRET"),
        "{stdout}"
    );
    let (code, stdout, _) = check(true, Some("s3cret"));
    assert_eq!(code, Some(0), "{stdout}");
    assert!(!stdout.contains("warning"), "{stdout}");

    // An embedded stage whose examples use a label the charter does not declare.
    let charter = std::fs::read_to_string(proj.join("charters/support-triage.yaml")).unwrap();
    let embedded = charter.replace(
        "  otherwise: escalate",
        "    - embedded: { examples: data/examples.csv, accept_above: 0.8 }\n  otherwise: escalate",
    );
    write(&proj, "charters/support-triage.yaml", &embedded);
    write(
        &proj,
        "data/examples.csv",
        "text,label\nrefund please,billing\nit crashed,bug\nwhere is my parcel,shipping\n",
    );
    let (code, stdout, _) = check(false, Some("s"));
    assert_eq!(code, Some(1), "{stdout}");
    assert!(
        stdout.contains("data/examples.csv:4:1: error: examples of charter `support-triage`: label `shipping` is not declared in `decide.labels` (billing, bug, other)"),
        "{stdout}"
    );
    // The wrong delimiter.
    write(
        &proj,
        "data/examples.csv",
        "text;label\nrefund please;billing\n",
    );
    let (code, stdout, _) = check(false, Some("s"));
    assert_eq!(code, Some(1), "{stdout}");
    assert!(
        stdout.contains("data/examples.csv:1:1: error:")
            && stdout.contains("the delimiter must be a comma"),
        "{stdout}"
    );
    // Fixed, it passes.
    write(
        &proj,
        "data/examples.csv",
        "text,label\nrefund please,billing\nit crashed,bug\nhello,other\n",
    );
    let (code, stdout, stderr) = check(false, Some("s"));
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `init` says how to take the first steps: the secret to export and a first `send`.
#[test]
fn init_prints_the_export_and_a_first_send() {
    let dir = temp_dir("init-next");
    let proj = dir.join("proj");
    let (code, _, stderr) = charter(&["init", proj.to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");
    let export = stderr
        .lines()
        .find_map(|l| l.trim().strip_prefix("export SUPPORT_WEBHOOK_SECRET="))
        .unwrap_or_else(|| panic!("{stderr}"));
    assert_eq!(export.len(), 32, "{stderr}");
    assert!(
        stderr.contains(&format!(
            "charter send support-triage {0}/samples/ticket.json --dir {0}",
            proj.display()
        )),
        "{stderr}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
