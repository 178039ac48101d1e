// The task definition of `docker` jobs, on EC2 because its dockerd sidecar must be privileged (Fargate
// cannot), and the paths the runner and the daemon must agree on.

import { Duration, Stack, Validations } from 'aws-cdk-lib';
import * as ecs from 'aws-cdk-lib/aws-ecs';
import type { Arch } from './config';
import { pascal } from './lambdas';
import { RUNNER_CONTAINER, RUNNER_STOP_TIMEOUT_SECONDS, type Runners } from './runners';

/**
 * The runner's home in the official image (`ghcr.io/actions/actions-runner`): `run.sh`, `bin/`,
 * `externals/`, the work directory `_work/`. In the docker variant this whole tree is one task volume
 * shared with the dockerd sidecar at the same path (see `dindTaskDefinition`).
 */
export const RUNNER_HOME = '/home/runner';
/** Where the runner works (`<RUNNER_HOME>/_work`): job containers get it bind-mounted by the daemon. */
export const RUNNER_WORK_DIR = `${RUNNER_HOME}/_work`;
/** The runner's node & co.; the daemon mounts it into job containers (`container:`) for JavaScript actions. */
export const RUNNER_EXTERNALS_DIR = `${RUNNER_HOME}/externals`;

/** The Docker daemon of `docker` jobs, from ECR Public's mirror of Docker's official image (no Docker Hub pull limits). */
export const DIND_IMAGE = 'public.ecr.aws/docker/library/docker:28-dind';
/** How the runner container reaches the daemon: loopback TCP in the task's own network namespace. */
export const DOCKER_HOST = 'tcp://127.0.0.1:2375';
/** Where the daemon also listens, in its own container: what job containers get bind-mounted. */
export const DOCKER_SOCKET = '/var/run/docker.sock';

/**
 * The task definition of `docker` jobs on EC2: the runner container unprivileged, and a `dockerd`
 * sidecar — the only privileged container — that the runner reaches over loopback TCP (awsvpc: the
 * task's containers share one network namespace).
 *
 * The daemon resolves every bind mount the runner asks for in ITS OWN filesystem, so it must see the
 * runner's files at the paths the runner names:
 * - Job containers (`container:`) get `<root>/_work`, `<root>/externals` (node for JavaScript
 *   actions), `_temp`, `_actions`, `_tool` bind-mounted by host path (actions/runner
 *   src/Runner.Worker/ContainerOperationProvider.cs, StartContainerAsync), and
 *   `/var/run/docker.sock:/var/run/docker.sock` (src/Runner.Worker/Container/ContainerInfo.cs for job
 *   containers, src/Runner.Worker/Handlers/ContainerActionHandler.cs for container actions).
 * - A JIT runner older than GitHub's current release updates itself before taking a job (JIT runners
 *   cannot --disableupdate). The updater (src/Misc/layoutbin/update.sh.template) runs
 *   `mv <root>/bin <root>/bin.<old>`, `mv <root>/externals <root>/externals.<old>`, then symlinks
 *   `bin` and `externals` to the new `bin.<new>`/`externals.<new>` in the same root. Renaming a
 *   mount point fails (EBUSY), which is what a volume mounted at `externals` was: the update failed
 *   and the runner retried until the registration timeout. After an update `externals` is a symlink
 *   into the root, which the daemon must resolve to the new directory.
 * So the WHOLE runner root, /home/runner, is one task volume mounted read-write at /home/runner in
 * both containers: nothing under it is a mount point, the update renames within one filesystem, and
 * every path (symlinks included) means the same file in the runner and in the daemon.
 * actions-runner-controller's dind mode (charts/gha-runner-scale-set/templates/_helpers.tpl) shares
 * `_work` and a copy of `externals` (an init container copies it into an emptyDir) — a copy the
 * daemon keeps seeing at the old version after a self-update; sharing the root avoids that.
 *
 * The volume starts empty; Docker fills an empty named volume from the image of a container that
 * mounts it over existing content ("Populate a volume using a container",
 * https://docs.docker.com/engine/storage/volumes/), with the directory's owner and mode: the
 * runner's image has /home/runner (uid 1001), the dind image has no /home/runner, so whichever starts
 * first, the volume becomes the runner's home.
 *
 * The Docker socket: dockerd listens on `unix:///var/run/docker.sock` inside its own container as
 * well as on loopback TCP, so the `/var/run/docker.sock` bind mount of job containers and container
 * actions is the daemon's socket — as in actions-runner-controller's dind container
 * (`dockerd --host=unix:///var/run/docker.sock`). The runner itself keeps `DOCKER_HOST` on TCP and
 * needs no socket of its own.
 */
export function dindTaskDefinition(
  stack: Stack,
  arch: Arch,
  { image, logGroup, taskRole, executionRole, environment: runnerEnvironment }: Runners,
): ecs.TaskDefinition {
  const td = new ecs.TaskDefinition(stack, `RunnerTask${pascal(arch)}Docker`, {
    family: `${stack.stackName}-runner-${arch}-docker`,
    compatibility: ecs.Compatibility.EC2,
    networkMode: ecs.NetworkMode.AWS_VPC,
    // Sized per task by RunTask overrides, as on Fargate.
    cpu: '1024',
    memoryMiB: '2048',
    taskRole,
    executionRole,
    placementConstraints: [
      ecs.PlacementConstraint.memberOf(`attribute:ecs.cpu-architecture == ${arch === 'x64' ? 'x86_64' : 'arm64'}`),
    ],
    volumes: [
      { name: 'runner-home', dockerVolumeConfiguration: { scope: ecs.Scope.TASK, driver: 'local' } },
      { name: 'docker', dockerVolumeConfiguration: { scope: ecs.Scope.TASK, driver: 'local' } },
    ],
  });
  const dockerd = td.addContainer('dockerd', {
    containerName: 'dockerd',
    image: ecs.ContainerImage.fromRegistry(DIND_IMAGE),
    privileged: true,
    essential: true,
    memoryReservationMiB: 256,
    // Plain TCP on loopback only (the task's ENI never exposes the daemon), and the Unix socket that
    // job containers get bind-mounted.
    command: ['dockerd', `--host=${DOCKER_HOST}`, `--host=unix://${DOCKER_SOCKET}`, '--tls=false'],
    environment: { DOCKER_TLS_CERTDIR: '' },
    healthCheck: {
      command: ['CMD', 'docker', '--host', DOCKER_HOST, 'info'],
      interval: Duration.seconds(5),
      retries: 12,
      startPeriod: Duration.seconds(5),
      timeout: Duration.seconds(5),
    },
    logging: ecs.LogDrivers.awsLogs({ logGroup, streamPrefix: `${arch}-dockerd` }),
  });
  dockerd.addMountPoints(
    { containerPath: '/var/lib/docker', sourceVolume: 'docker', readOnly: false },
    { containerPath: RUNNER_HOME, sourceVolume: 'runner-home', readOnly: false },
  );
  const runner = td.addContainer(RUNNER_CONTAINER, {
    containerName: RUNNER_CONTAINER,
    image,
    essential: true,
    memoryReservationMiB: 512,
    stopTimeout: Duration.seconds(RUNNER_STOP_TIMEOUT_SECONDS),
    environment: { DOCKER_HOST, ...runnerEnvironment },
    logging: ecs.LogDrivers.awsLogs({ logGroup, streamPrefix: `${arch}-docker` }),
  });
  runner.addMountPoints({ containerPath: RUNNER_HOME, sourceVolume: 'runner-home', readOnly: false });
  runner.addContainerDependencies({ container: dockerd, condition: ecs.ContainerDependencyCondition.HEALTHY });
  Validations.of(td).acknowledge({
    id: 'AwsSolutions-ECS2',
    reason:
      'The only environment values are DOCKER_HOST (loopback address), AWS_REGION, TASUKI_STOP_GRACE_SECONDS, TASUKI_TABLE (a table name), TASUKI_RETENTION_DAYS and an empty DOCKER_TLS_CERTDIR: no secrets.',
  });
  return td;
}
