use lambda_runtime::{run, service_fn, Error, LambdaEvent};
use tasuki_core::adapters::Aws;
use tasuki_core::handlers::steps::StepInput;

#[tokio::main]
async fn main() -> Result<(), Error> {
    tasuki_core::telemetry::init();
    let handler = Aws::from_env().await?.cleanup().await?;
    run(service_fn(|event: LambdaEvent<StepInput>| {
        handler.handle(event.payload)
    }))
    .await
}
