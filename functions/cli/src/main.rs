//! `tasuki jobs ls` / `tasuki jobs show <job-id>`: job lifecycles from the DynamoDB table;
//! `tasuki cancel <job-id>`: end tasuki's handling of a job, cleanly; `tasuki explain <labels…>`:
//! what the config makes of a label set; `tasuki rescue`; `tasuki config`. Every command answers in
//! a table for people or `--json` for scripts, and fails with one line that says what to do.

mod cancel;
mod explain;
mod failure;
mod stats;

use clap::{Parser, Subcommand};
use failure::Target;
use serde::Serialize;
use std::process::ExitCode;
use tasuki_core::adapters::dynamodb::DynamoLifecycleStore;
use tasuki_core::domain::config::Config;
use tasuki_core::domain::deploy::DeployConfig;
use tasuki_core::domain::figures::JobFigures;
use tasuki_core::domain::ids::JobId;
use tasuki_core::domain::job::console_url;
use tasuki_core::domain::listing::{
    parse_states, FilterError, JobFilter, Limit, RepositoryName, Since, Window,
};
use tasuki_core::domain::record::{JobRecord, LifecycleEvent};
use tasuki_core::handlers::rescue::Sweep;
use tasuki_core::lambda::Aws;
use tasuki_core::ports::{LifecycleStore, StoreError};

#[derive(Parser)]
#[command(
    name = "tasuki",
    about = "Operate tasuki: GitHub Actions runners on AWS"
)]
struct Cli {
    /// The lifecycle table (standard AWS env picks account, region and endpoint).
    #[arg(
        long,
        env = "TASUKI_TABLE",
        default_value = "tasuki-jobs",
        global = true
    )]
    table: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// What the jobs received in a window add up to: states, queued → running and launch →
    /// registered percentiles, fallback rates by reason, runner hours and estimated cost per day
    /// (from the jobs' timelines, read through the by-day index: never a scan).
    Stats {
        /// Jobs received since then: a duration back from now (30m, 2h, 3d, 1w) or an RFC 3339
        /// time.
        #[arg(long, default_value = "7d", value_parser = Since::parse)]
        since: Since,
        /// Only jobs of this repository, as GitHub spells it.
        #[arg(long, value_name = "OWNER/NAME", value_parser = RepositoryName::parse)]
        repository: Option<RepositoryName>,
        /// At most this many jobs (newest first), one timeline read each.
        #[arg(long, default_value = "500", value_parser = parse_limit)]
        limit: Limit,
        #[arg(long)]
        json: bool,
    },
    /// Jobs and their lifecycles.
    #[command(subcommand)]
    Jobs(Jobs),
    /// End tasuki's handling of an unfinished job as GitHub's cancel does: its execution stops the
    /// runner task, deletes the runner and revokes its grant (the GitHub job itself is GitHub's to
    /// cancel). Reads the Lambdas' configuration from TASUKI_CONFIG_FILE or TASUKI_CONFIG. Exits 1
    /// for a job that is unknown or already finished.
    Cancel {
        job_id: JobId,
        /// Why, for the record of this command's output.
        #[arg(long)]
        reason: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// The deployment file (`tasuki.config.json`).
    #[command(subcommand)]
    Config(ConfigCommand),
    /// The runner and the ordered launch candidates the config gives a `runs-on` label set, or
    /// why it is refused; launches nothing. Reads the Lambdas' configuration from
    /// TASUKI_CONFIG_FILE or TASUKI_CONFIG. Exits 1 when the labels are refused or not tasuki's.
    Explain {
        #[arg(required = true)]
        labels: Vec<String>,
        #[arg(long)]
        json: bool,
    },
    /// Run the rescue sweep now, as the scheduled `rescue` Lambda does every minute: jobs past
    /// their deadline, checked against GitHub. Reads the Lambdas' configuration from
    /// TASUKI_CONFIG_FILE or TASUKI_CONFIG.
    Rescue {
        /// Say what would be done, change nothing.
        #[arg(long)]
        dry_run: bool,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Print the file's JSON Schema (generated from the Rust type).
    Schema,
    /// Validate a deployment file; errors name the field.
    Check {
        path: std::path::PathBuf,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum Jobs {
    /// The jobs received in a window, newest first (read from the table's index of jobs by the
    /// day they were received: one query per day, never a scan).
    Ls {
        /// Only jobs in this state (repeat it, or a comma list): received, refused, planned,
        /// launching, waiting-for-registration, running, completed, failed, cancelled, timed-out,
        /// skipped, interrupted, rerun.
        #[arg(long = "state", value_name = "STATE")]
        states: Vec<String>,
        /// Only jobs of this repository, as GitHub spells it.
        #[arg(long, value_name = "OWNER/NAME", value_parser = RepositoryName::parse)]
        repository: Option<RepositoryName>,
        /// Jobs received since then: a duration back from now (30m, 2h, 3d, 1w) or an RFC 3339
        /// time.
        #[arg(long, default_value = "7d", value_parser = Since::parse)]
        since: Since,
        #[arg(long, default_value = "50", value_parser = parse_limit)]
        limit: Limit,
        #[arg(long)]
        json: bool,
    },
    /// One job's timeline: every state change, attempt and reason.
    Show {
        job_id: JobId,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Serialize)]
struct JobSummary {
    job_id: JobId,
    repository: String,
    workflow: String,
    job_name: String,
    labels: Vec<String>,
    state: String,
    attempt: u32,
    created_at: String,
    updated_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    runner_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    conclusion: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    execution_arn: Option<String>,
    /// The execution's graph in the Step Functions console.
    #[serde(skip_serializing_if = "Option::is_none")]
    console_url: Option<String>,
}

impl From<JobRecord> for JobSummary {
    fn from(r: JobRecord) -> Self {
        Self {
            job_id: r.job.job_id,
            repository: r.job.repository,
            workflow: r.job.workflow,
            job_name: r.job.job_name,
            labels: r.job.labels,
            state: r.position.state.to_string(),
            attempt: r.position.attempt,
            created_at: r.created_at,
            updated_at: r.updated_at,
            runner_name: r.runner.map(|runner| runner.name),
            conclusion: r.conclusion.map(|c| c.to_string()),
            reason: r.reason,
            console_url: console_url(&r.execution_arn),
            execution_arn: Some(r.execution_arn),
        }
    }
}

#[derive(Serialize)]
struct JobTimeline {
    job: JobSummary,
    events: Vec<LifecycleEvent>,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Explain { labels, json } => return explain_command(&labels, json),
        Command::Config(command) => config_command(&command),
        Command::Rescue { dry_run, json } => rescue_command(dry_run, json).await,
        Command::Cancel {
            job_id,
            reason,
            json,
        } => cancel_command(job_id, reason, json).await,
        Command::Stats {
            since,
            repository,
            limit,
            json,
        } => {
            on_table(
                &cli.table,
                TableCommand::Stats {
                    since,
                    repository,
                    limit,
                    json,
                },
            )
            .await
        }
        Command::Jobs(jobs) => on_table(&cli.table, TableCommand::Jobs(jobs)).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("tasuki: {message}");
            ExitCode::FAILURE
        }
    }
}

/// The commands that read the lifecycle table only.
enum TableCommand {
    Jobs(Jobs),
    Stats {
        since: Since,
        repository: Option<RepositoryName>,
        limit: Limit,
        json: bool,
    },
}

async fn on_table(table: &str, command: TableCommand) -> Result<(), String> {
    let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    match region(&sdk) {
        Ok(region) => {
            let target = Target {
                table: table.to_string(),
                region,
                endpoint: sdk.endpoint_url().map(String::from),
                table_hint: "pass --table or set TASUKI_TABLE",
            };
            let client = aws_sdk_dynamodb::Client::new(&sdk);
            let store = DynamoLifecycleStore::new(client, table, 1);
            let done = match command {
                TableCommand::Jobs(jobs) => jobs_command(jobs, &store).await,
                TableCommand::Stats {
                    since,
                    repository,
                    limit,
                    json,
                } => stats_command(&store, since, repository, limit, json).await,
            };
            done.map_err(|e| e.explain(&target))
        }
        Err(message) => Err(message),
    }
}

/// Each job of the window with its figures, then what they add up to.
async fn stats_command(
    store: &DynamoLifecycleStore,
    since: Since,
    repository: Option<RepositoryName>,
    limit: Limit,
    json: bool,
) -> Result<(), Failure> {
    let now = time::OffsetDateTime::now_utc();
    let filter = JobFilter {
        repository,
        ..JobFilter::window(Window::new(since.resolve(now), now)?, limit)
    };
    let now_rfc3339 = now
        .format(&time::format_description::well_known::Rfc3339)
        .map_err(|e| e.to_string())?;
    let mut samples = Vec::new();
    for record in store.list(&filter).await? {
        let timeline = store.timeline(record.job.job_id).await?;
        if let Some(figures) = JobFigures::of(&timeline, &now_rfc3339) {
            let day = record.created_at.get(..10).unwrap_or_default().to_string();
            samples.push(stats::JobSample { day, figures });
        }
    }
    show(&stats::stats(&samples), json, stats::render)?;
    Ok(())
}

fn explain_command(labels: &[String], json: bool) -> ExitCode {
    let config = match Config::from_env() {
        Ok(config) => config,
        Err(error) => {
            eprintln!("tasuki: {error}");
            return ExitCode::FAILURE;
        }
    };
    let explained = explain::explain(labels, &config);
    if let Err(error) = show(&explained, json, explain::render) {
        eprintln!("tasuki: {error}");
        return ExitCode::FAILURE;
    }
    if explained.accepted() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// The region the standard environment names; without one, the message that says how to name it
/// (the SDK would only fail at the first call, less clearly).
fn region(sdk: &aws_config::SdkConfig) -> Result<String, String> {
    sdk.region().map(ToString::to_string).ok_or_else(|| {
        "no AWS region: set AWS_REGION (or AWS_PROFILE with a region), \
         or `source .tasuki/local.env` for the local stack"
            .into()
    })
}

/// A command's failure: the store's, explained against where the CLI looked, or a message.
enum Failure {
    Store(StoreError),
    Message(String),
}

impl Failure {
    fn explain(self, target: &Target) -> String {
        match self {
            Failure::Store(error) => failure::explain(&error, target),
            Failure::Message(message) => message,
        }
    }
}

impl From<StoreError> for Failure {
    fn from(error: StoreError) -> Self {
        Failure::Store(error)
    }
}

impl From<String> for Failure {
    fn from(message: String) -> Self {
        Failure::Message(message)
    }
}

impl From<FilterError> for Failure {
    fn from(error: FilterError) -> Self {
        Failure::Message(error.to_string())
    }
}

fn parse_limit(text: &str) -> Result<Limit, String> {
    let limit: usize = text
        .parse()
        .map_err(|_| format!("`{text}` is not a number"))?;
    Limit::new(limit).map_err(|e| e.to_string())
}

async fn cancel_command(job_id: JobId, reason: Option<String>, json: bool) -> Result<(), String> {
    let aws = Aws::from_env()
        .await
        .map_err(|e| e.to_string())?
        .without_metrics();
    let target = Target {
        table: aws.config.table_name.clone(),
        region: region(&aws.sdk)?,
        endpoint: aws.sdk.endpoint_url().map(String::from),
        table_hint: "check table_name in the configuration (TASUKI_CONFIG_FILE or TASUKI_CONFIG)",
    };
    let cancelled = cancel::cancel(&*aws.store(), &*aws.executions(), job_id, reason)
        .await
        .map_err(|error| match error {
            cancel::CancelError::Store(error) => failure::explain(&error, &target),
            other => other.to_string(),
        })?;
    show(&cancelled, json, cancel::render)
}

async fn rescue_command(dry_run: bool, json: bool) -> Result<(), String> {
    let aws = Aws::from_env()
        .await
        .map_err(|e| e.to_string())?
        .without_metrics();
    let rescue = aws.rescue().await.map_err(|e| e.to_string())?;
    let sweep = rescue.sweep(dry_run).await.map_err(|e| e.to_string())?;
    show(&sweep, json, render_sweep)?;
    Ok(())
}

/// Prints `value` as pretty JSON, or as `render` writes it for people.
fn show<T: Serialize + ?Sized>(
    value: &T,
    json: bool,
    render: fn(&T) -> String,
) -> Result<(), String> {
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(value).map_err(|e| e.to_string())?
        );
    } else {
        print!("{}", render(value));
    }
    Ok(())
}

fn render_sweep(sweep: &Sweep) -> String {
    let mut out = format!(
        "{} overdue job(s){}\n",
        sweep.overdue,
        if sweep.dry_run {
            " (dry run: nothing changed)"
        } else {
            ""
        }
    );
    for job in &sweep.jobs {
        out += &format!(
            "  {:<14} {:<26} {:<16} {}\n",
            job.job_id,
            job.state.as_str(),
            job.action,
            job.reason
        );
    }
    if !sweep.lost_queued.is_empty() {
        out += &format!("{} lost queued delivery(ies)\n", sweep.lost_queued.len());
    }
    for lost in &sweep.lost_queued {
        let id = |v: Option<String>| v.unwrap_or_else(|| "-".into());
        out += &format!(
            "  delivery {:<12} job {:<14} {:<10} {}\n",
            id(lost.delivery_id.map(|d| d.to_string())),
            id(lost.job_id.map(|j| j.to_string())),
            lost.action,
            lost.reason
        );
    }
    if !sweep.orphans.is_empty() {
        out += &format!(
            "{} runner task(s) nothing else will stop\n",
            sweep.orphans.len()
        );
    }
    for orphan in &sweep.orphans {
        out += &format!(
            "  task {} job {} {:<6} {}\n",
            orphan.task_arn.as_deref().unwrap_or("-"),
            orphan
                .job_id
                .map_or_else(|| "-".to_string(), |j| j.to_string()),
            orphan.action,
            orphan.reason
        );
    }
    out
}

fn config_command(command: &ConfigCommand) -> Result<(), String> {
    match command {
        ConfigCommand::Schema => print!("{}", DeployConfig::json_schema()),
        ConfigCommand::Check { path, json } => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            DeployConfig::from_json(&text).map_err(|e| format!("{}: {e}", path.display()))?;
            let checked = Checked {
                path: path.display().to_string(),
                valid: true,
            };
            show(&checked, *json, |c| format!("{}: valid\n", c.path))?;
        }
    }
    Ok(())
}

/// `config check --json`'s answer (an invalid file exits 1 with the field named).
#[derive(Serialize)]
struct Checked {
    path: String,
    valid: bool,
}

async fn jobs_command(jobs: Jobs, store: &DynamoLifecycleStore) -> Result<(), Failure> {
    match jobs {
        Jobs::Ls {
            states,
            repository,
            since,
            limit,
            json,
        } => {
            let now = time::OffsetDateTime::now_utc();
            let filter = JobFilter {
                window: Window::new(since.resolve(now), now)?,
                states: parse_states(&states)?,
                repository,
                limit,
            };
            let jobs: Vec<JobSummary> = store
                .list(&filter)
                .await?
                .into_iter()
                .map(JobSummary::from)
                .collect();
            show(jobs.as_slice(), json, render_list)?;
        }
        Jobs::Show { job_id, json } => {
            let record = store
                .get(job_id)
                .await?
                .ok_or_else(|| format!("no job {job_id} in the lifecycle table"))?;
            let events = store.timeline(job_id).await?;
            let timeline = JobTimeline {
                job: record.into(),
                events,
            };
            show(&timeline, json, render_timeline)?;
        }
    }
    Ok(())
}

fn render_list(jobs: &[JobSummary]) -> String {
    let mut out = format!(
        "{:<14} {:<26} {:<8} {:<32} {}\n",
        "JOB", "STATE", "ATTEMPT", "REPOSITORY", "CREATED"
    );
    for job in jobs {
        out += &format!(
            "{:<14} {:<26} {:<8} {:<32} {}\n",
            job.job_id, job.state, job.attempt, job.repository, job.created_at
        );
    }
    out
}

fn render_timeline(timeline: &JobTimeline) -> String {
    let job = &timeline.job;
    let mut out = format!(
        "job {} · {} · {} / {} · labels [{}]\nstate: {} (attempt {})",
        job.job_id,
        job.repository,
        job.workflow,
        job.job_name,
        job.labels.join(", "),
        job.state,
        job.attempt
    );
    if let Some(conclusion) = &job.conclusion {
        out += &format!(" · conclusion: {conclusion}");
    }
    if let Some(arn) = &job.execution_arn {
        out += &format!("\nexecution: {arn}");
    }
    if let Some(url) = &job.console_url {
        out += &format!("\nconsole: {url}");
    }
    out += "\n\n";
    for e in &timeline.events {
        let mut line = format!(
            "  {:<30} {:<26} attempt {}",
            e.at,
            e.event.as_str(),
            e.attempt
        );
        if let Some(candidate) = &e.candidate {
            line += &format!("  {candidate}");
        }
        if let Some(reason) = &e.reason {
            line += &format!("  — {reason}");
        }
        out += &line;
        out += "\n";
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use tasuki_core::domain::lifecycle::JobState;
    use tasuki_core::domain::record::Event;

    #[test]
    fn a_timeline_shows_every_event_with_its_attempt_candidate_and_reason() {
        let timeline = JobTimeline {
            job: JobSummary {
                job_id: JobId::new(7),
                repository: "octo-org/app".into(),
                workflow: "CI".into(),
                job_name: "build".into(),
                labels: vec!["tasuki".into()],
                state: "completed".into(),
                attempt: 2,
                created_at: "t0".into(),
                updated_at: "t9".into(),
                runner_name: None,
                conclusion: Some("success".into()),
                reason: None,
                execution_arn: Some("arn:aws:states:us-east-1:1:execution:sm:7-1".into()),
                console_url: console_url("arn:aws:states:us-east-1:1:execution:sm:7-1"),
            },
            events: vec![
                LifecycleEvent {
                    seq: 3,
                    at: "t3".into(),
                    event: Event::Entered(JobState::Launching),
                    state: JobState::Launching,
                    attempt: 1,
                    candidate: Some("fargate-spot/us-east-1a/2cpu-4gb/x64".into()),
                    reason: None,
                },
                LifecycleEvent {
                    seq: 4,
                    at: "t4".into(),
                    event: Event::AttemptFailed,
                    state: JobState::Launching,
                    attempt: 1,
                    candidate: None,
                    reason: Some("CapacityUnavailable: none".into()),
                },
            ],
        };
        let text = render_timeline(&timeline);
        assert!(text.contains("state: completed (attempt 2) · conclusion: success"));
        assert!(text.contains("\nexecution: arn:aws:states:us-east-1:1:execution:sm:7-1\n"));
        assert!(text.contains(
            "\nconsole: https://us-east-1.console.aws.amazon.com/states/home?region=us-east-1#/v2/executions/details/arn:aws:states:us-east-1:1:execution:sm:7-1\n"
        ));
        assert!(
            text.contains("launching") && text.contains("fargate-spot/us-east-1a/2cpu-4gb/x64")
        );
        assert!(text.contains("attempt-failed") && text.contains("— CapacityUnavailable: none"));
        assert_eq!(text.lines().filter(|l| l.contains("attempt 1")).count(), 2);
    }
}
