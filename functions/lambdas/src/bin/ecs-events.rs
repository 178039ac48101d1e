use lambda_runtime::{run, service_fn, Error, LambdaEvent};
use tasuki_core::handlers::ecs_events::TaskStateChange;
use tasuki_core::lambda::Aws;

#[tokio::main]
async fn main() -> Result<(), Error> {
    tasuki_core::telemetry::init();
    let handler = Aws::from_env().await?.ecs_events();
    run(service_fn(|event: LambdaEvent<TaskStateChange>| {
        handler.handle(event.payload)
    }))
    .await
}
