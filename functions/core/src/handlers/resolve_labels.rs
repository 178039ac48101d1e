//! ResolveLabels: labels → runner spec → ordered launch candidates, or a recorded refusal. The
//! re-run of a job Spot interrupted gets no Spot candidates.

use super::state::{LaunchPlan, NewJob, StepInput};
use super::step::Step;
use super::{Effects, Lifecycle};
use crate::domain::config::Config;
use crate::domain::labels::{self, LabelVerdict};
use crate::domain::lifecycle::Happening;
use crate::domain::plan;
use crate::error::StepError;
use async_trait::async_trait;
use std::sync::Arc;

pub struct ResolveLabels {
    pub config: Arc<Config>,
    pub lifecycle: Lifecycle,
}

#[async_trait]
impl Step for ResolveLabels {
    const NAME: &'static str = "resolve-labels";
    type Input = StepInput<NewJob>;
    type Output = LaunchPlan;

    async fn run(&self, input: Self::Input) -> Result<LaunchPlan, StepError> {
        let job = &input.state.job;
        let planned = match labels::resolve(&job.labels, &self.config) {
            LabelVerdict::Accepted(mut spec) => {
                // A re-run of a job Spot interrupted (tasuki asked for it) avoids Spot.
                if job.run_attempt > 1
                    && self.lifecycle.store.rerun_marked(&job.rerun_key()).await?
                {
                    tracing::info!("a re-run of a job Spot interrupted: no Spot candidates");
                    spec.spot_allowed = false;
                }
                plan::plan(&spec, &self.config).map_err(|r| r.to_string())
            }
            LabelVerdict::Refused(refusal) => Err(refusal.to_string()),
            LabelVerdict::NotOurs => Err("no `tasuki` label".to_string()),
        };
        let plan = match planned.map(LaunchPlan::new) {
            Ok(Some(plan)) => plan,
            Ok(None) => {
                let reason = "no launch candidate".to_string();
                return Err(self.lifecycle.refuse(job.job_id, reason).await);
            }
            Err(reason) => return Err(self.lifecycle.refuse(job.job_id, reason).await),
        };
        let happening = Happening::Plan {
            candidates: plan.count(),
        };
        self.lifecycle
            .transition(job.job_id, happening, Effects::default())
            .await?;
        Ok(plan)
    }
}
