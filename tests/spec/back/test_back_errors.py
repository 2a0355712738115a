"""Bad input: each kind of mistake gives one exact message naming file:line:col and the key path."""

from __future__ import annotations

from pathlib import Path

import pytest

from stackd.errors import SpecError
from stackd.spec.load import load
from stackd.spec.options import LoadOptions

CASES = [
    pytest.param(
        'services:\n  web:\n    image: nginx\n    ports:\n      - "80800:80"\n',
        'stack.yaml:5:9: services.web.ports[0]: "80800:80": host port 80800 is out of range 1-65535',
        id='port_range',
    ),
    pytest.param(
        'services:\n  web:\n    imgae: nginx\n',
        'stack.yaml:3:5: services.web.imgae: unknown key; did you mean "image"?',
        id='typo',
    ),
    pytest.param(
        'services:\n  web:\n    image: nginx\nnetwork:\n  x: {}\n',
        'stack.yaml:4:1: network: unknown key; did you mean "networks"?',
        id='typo_top',
    ),
    pytest.param(
        'services:\n  web:\n    image: nginx\n    networks: [front]\nnetworks:\n  frontend: {}\n',
        'stack.yaml:4:16: services.web.networks.front: network "front" is not defined in the top-level networks; did you mean "frontend"?',
        id='undef_net',
    ),
    pytest.param(
        'services:\n  web:\n    image: nginx\n    volumes:\n      - data:/var/lib/data\n',
        'stack.yaml:5:9: services.web.volumes[0]: volume "data" is not defined in the top-level volumes',
        id='undef_vol',
    ),
    pytest.param(
        'services:\n  web:\n    image: nginx\n    secrets: [token]\n',
        'stack.yaml:4:15: services.web.secrets[0]: secret "token" is not defined in the top-level secrets',
        id='undef_secret',
    ),
    pytest.param(
        'services:\n  web:\n    image: nginx\n    configs:\n      - source: app\n',
        'stack.yaml:5:9: services.web.configs[0]: config "app" is not defined in the top-level configs',
        id='undef_config',
    ),
    pytest.param(
        'services:\n  web:\n    image: nginx\n    depends_on: [dbb]\n  db:\n    image: pg\n',
        'stack.yaml:4:18: services.web.depends_on.dbb: depends on undefined service "dbb"; did you mean "db"?',
        id='undef_dep',
    ),
    pytest.param(
        'services:\n  a:\n    image: x\n    depends_on: [b]\n  b:\n    image: x\n    depends_on: [a]\n',
        'stack.yaml:4:18: services.a.depends_on.b: dependency cycle detected: a -> b -> a',
        id='cycle',
    ),
    pytest.param(
        'services:\n  web:\n    image: nginx\n    network_mode: service:proxy\n',
        'stack.yaml:4:19: services.web.network_mode: "service:proxy": service "proxy" is not defined',
        id='netmode_svc',
    ),
    pytest.param(
        'services:\n  web:\n    image: nginx\n    volumes_from: [data]\n',
        'stack.yaml:4:20: services.web.volumes_from[0]: "data": service "data" is not defined',
        id='volumes_from',
    ),
    pytest.param(
        'services:\n  web:\n    image: nginx\n    links: [db:database]\n',
        'stack.yaml:4:13: services.web.links[0]: "db:database": service "db" is not defined',
        id='links',
    ),
    pytest.param(
        'services:\n  web:\n    image: nginx\n    container_name: web\n    scale: 3\n',
        'stack.yaml:4:21: services.web.container_name: "web": a fixed container name cannot be used with scale > 1 (containers need distinct names)',
        id='container_name_scale',
    ),
    pytest.param(
        'services:\n  web:\n    image: nginx\n    network_mode: host\n    networks: [default]\n',
        'stack.yaml:4:19: services.web.network_mode: "network_mode" and "networks" cannot be used together; keep one',
        id='netmode_networks',
    ),
    pytest.param(
        'services:\n  web:\n    image: nginx\n    stop_grace_period: 10 seconds\n',
        'stack.yaml:4:24: services.web.stop_grace_period: "10 seconds" is not a duration (examples: 10s, 1m30s, 500ms)',
        id='bad_duration',
    ),
    pytest.param(
        'services:\n  web:\n    image: nginx\n    shm_size: lots\n',
        'stack.yaml:4:15: services.web.shm_size: "lots" is not a size (examples: 512m, 1g, 1024)',
        id='bad_bytes',
    ),
    pytest.param(
        'services:\n  web:\n    image: nginx\n    restart: sometimes\n',
        'stack.yaml:4:14: services.web.restart: "sometimes": must be no, always, on-failure[:N] or unless-stopped',
        id='bad_restart',
    ),
    pytest.param(
        'services:\n  web:\n    image: nginx\n    privileged: maybe\n',
        'stack.yaml:4:17: services.web.privileged: "maybe": must be true or false',
        id='bad_bool',
    ),
    pytest.param(
        'services:\n  web:\n    image: nginx\n    scale: many\n',
        'stack.yaml:4:12: services.web.scale: "many": must be an integer',
        id='bad_int',
    ),
    pytest.param(
        'services:\n  web:\n    image: nginx\n    depends_on:\n      db:\n        condition: service_ready\n  db:\n    image: pg\n',
        'stack.yaml:6:20: services.web.depends_on.db.condition: "service_ready": must be one of service_started, service_healthy or service_completed_successfully',
        id='bad_condition',
    ),
    pytest.param(
        'services:\n  web:\n    image: nginx\n    volumes:\n      - ./data:/data:rx\n',
        'stack.yaml:5:9: services.web.volumes[0]: "./data:/data:rx": unknown volume mode "rx" (ro, rw, z, Z, nocopy, or a bind propagation)',
        id='bad_volume_mode',
    ),
    pytest.param(
        'services:\n  web:\n    image: nginx\n    ports: ["80:80/icmp"]\n',
        'stack.yaml:4:13: services.web.ports[0]: "80:80/icmp": protocol "icmp" is not tcp, udp or sctp',
        id='bad_proto',
    ),
    pytest.param(
        'services:\n  web:\n    image: nginx\n    ports: ["8080:0"]\n',
        'stack.yaml:4:13: services.web.ports[0]: "8080:0": container port 0 is out of range 1-65535',
        id='port_container_zero',
    ),
    pytest.param(
        'services:\n  web:\n    image: nginx\n    ports: "80:80"\n',
        'stack.yaml:4:12: services.web.ports: must be a list of ports, not a string',
        id='ports_not_list',
    ),
    pytest.param(
        'services:\n  web: nginx\n',
        'stack.yaml:2:8: services.web: must be a mapping, not a string',
        id='service_not_map',
    ),
    pytest.param(
        'services:\n  web:\n    image: nginx\n    volumes:\n      - type: bind\n        source: ./x\n',
        'stack.yaml:5:9: services.web.volumes[0]: required key "target" is missing',
        id='missing_target',
    ),
    pytest.param(
        'services:\n  web:\n    image: nginx\n    volumes:\n      - type: nfs\n        target: /x\n',
        'stack.yaml:5:15: services.web.volumes[0].type: "nfs": must be one of volume, bind, tmpfs, npipe, cluster or image',
        id='bad_volume_type',
    ),
    pytest.param(
        'services:\n  web:\n    image: nginx\n    environment:\n      - [A, B]\n',
        'stack.yaml:5:9: services.web.environment[0]: must be a KEY=VALUE string, not a list',
        id='env_bad_item',
    ),
    pytest.param(
        'services:\n  web:\n    image: nginx\n    depends_on: [debug]\n  debug:\n    image: busybox\n    profiles: [debug]\n',
        'stack.yaml:4:18: services.web.depends_on.debug: depends on service "debug", which is disabled (enable its profile: --profile debug)',
        id='disabled_dep',
    ),
    pytest.param(
        'services:\n  web:\n    image: nginx\n    oom_score_adj: 5000\n',
        'stack.yaml:4:20: services.web.oom_score_adj: 5000: must be at most 1000',
        id='oom',
    ),
    pytest.param(
        'services:\n  web:\n    image: nginx\n    ports:\n      - target: 70000\n        published: 80\n',
        'stack.yaml:5:17: services.web.ports[0].target: 70000: must be at most 65535',
        id='long_port_target',
    ),
    pytest.param(
        'services:\n  web:\n    image: nginx\n    ports:\n      - target: 80\n        published: 99999\n',
        'stack.yaml:6:20: services.web.ports[0].published: "99999": host port must be a number 1-65535 or a range like 8000-8010',
        id='long_port_pub',
    ),
    pytest.param(
        'services:\n  web:\n    image: nginx\n    extra_hosts: ["justahost"]\n',
        'stack.yaml:4:19: services.web.extra_hosts[0]: "justahost" is not HOST=IP or HOST:IP',
        id='extra_hosts',
    ),
    pytest.param(
        'services:\n  web:\n    image: nginx\n    healthcheck:\n      test: [CMD, true]\n      intervall: 5s\n',
        'stack.yaml:6:7: services.web.healthcheck.intervall: unknown key; did you mean "interval"?',
        id='unknown_nested',
    ),
    pytest.param(
        'services:\n  web:\n    image: nginx\n    secrets:\n      - source: s\n        mode: 0999\nsecrets:\n  s:\n    file: ./s\n',
        'stack.yaml:6:15: services.web.secrets[0].mode: "0999" is not a file mode (an octal number such as 0440)',
        id='mode',
    ),
    pytest.param(
        '- a\n- b\n',
        'stack.yaml:1:1: the top level of a stack file must be a mapping',
        id='top_not_map',
    ),
    pytest.param(
        'services:\n  web:\n    image: nginx\n    env_file: ./nope.env\n',
        "stack.yaml:4:15: services.web.env_file[0]: couldn't find env file: {dir}/nope.env",
        id='missing_env_file',
    ),
    pytest.param(
        'services:\n  web:\n    ports: ["80:80"]\n',
        'stack.yaml:3:5: services.web: has neither an image nor a build context; add image: or build:',
        id='no_image',
    ),
    pytest.param(
        'services:\n  web:\n    image: nginx\n    healthcheck:\n      test: [curl, -f, localhost]\n',
        'stack.yaml:5:14: services.web.healthcheck.test[0]: "curl": a test list starts with CMD, CMD-SHELL or NONE (or write the test as one string)',
        id='healthcheck_test',
    ),
    pytest.param(
        'services:\n  web:\n    image: nginx\n    networks: [front]\nnetworks:\n  front:\n    external: true\n    driver: overlay\n',
        'stack.yaml:8:13: networks.front.driver: cannot be set on an external network; stackd uses the existing one as it is',
        id='external_net_driver',
    ),
    pytest.param(
        'services:\n  web:\n    image: nginx\n    secrets: [s]\nsecrets:\n  s:\n    file: ./s\n    environment: S\n',
        'stack.yaml:7:5: secrets.s: needs exactly one of file, environment, content or external (has file and environment)',
        id='secret_two_sources',
    ),
    pytest.param(
        'services:\n  web:\n    image: nginx\nconfigs:\n  c:\n    name: app\n',
        'stack.yaml:6:5: configs.c: needs exactly one of file, environment, content or external (has none)',
        id='config_no_source',
    ),
    pytest.param(
        'services:\n  web:\n    image: [nginx\n',
        "stack.yaml:4:1: invalid YAML: did not find expected ',' or ']'",
        id='bad_yaml',
    ),
    pytest.param(
        'services:\n  web:\n    image: nginx\n    image: httpd\n',
        "stack.yaml:4:5: mapping key 'image' already defined at line 3",
        id='dup_key',
    ),
    pytest.param(
        'services:\n  web:\n    image: nginx\nnetworks:\n  n:\n    ipam:\n      config:\n        - subnett: 10.0.0.0/24\n',
        'stack.yaml:8:11: networks.n.ipam.config[0].subnett: unknown key; did you mean "subnet"?',
        id='ipam_typo',
    ),
    pytest.param(
        'services:\n  web:\n    image: nginx\n    depends_on:\n      db:\n        condtion: service_healthy\n  db:\n    image: pg\n',
        'stack.yaml:6:9: services.web.depends_on.db.condtion: unknown key; did you mean "condition"?',
        id='depends_long_typo',
    ),
    pytest.param(
        'services:\n  web:\n    image: nginx\n    deploy:\n      mode: everywhere\n',
        'stack.yaml:5:13: services.web.deploy.mode: "everywhere": must be one of global, replicated, replicated-job or global-job',
        id='deploy_mode',
    ),
    pytest.param(
        'services:\n  web:\n    image: nginx\n    deploy:\n      resources:\n        limits:\n          cpus: lots\n',
        'stack.yaml:7:17: services.web.deploy.resources.limits.cpus: "lots" is not a number of CPUs (such as 0.5)',
        id='cpus',
    ),
    pytest.param(
        'services:\n  web:\n    image: nginx\n    command: echo "unterminated\n',
        'stack.yaml:4:14: services.web.command: "echo \\"unterminated": no closing quotation (quotes must be balanced)',
        id='command_quote',
    ),
    pytest.param(
        'services:\n  web:\n    image: nginx\n    ulimits:\n      nofile: {soft: 1}\n',
        'stack.yaml:5:15: services.web.ulimits.nofile: required key "hard" is missing',
        id='ulimit_missing',
    ),
    pytest.param(
        'services:\n  web:\n    build:\n      context: [a]\n',
        'stack.yaml:4:16: services.web.build.context: must be a string, not a list',
        id='context_int',
    ),
    pytest.param(
        'services:\n  web:\n    image: nginx\n    deploy:\n      replicas: -1\n',
        'stack.yaml:5:17: services.web.deploy.replicas: -1: must be at least 0',
        id='replicas_neg',
    ),
    pytest.param(
        'services:\n  web:\n    image: nginx\n    scale: 1.5\n',
        'stack.yaml:4:12: services.web.scale: 1.5: must be a whole number',
        id='float_int',
    ),
    pytest.param(
        'services:\n  web:\n    image: nginx\n    post_start:\n      - user: root\n',
        'stack.yaml:5:9: services.web.post_start[0]: required key "command" is missing',
        id='hook_missing',
    ),
    pytest.param(
        'services:\n  web:\n    image: nginx\n    networks:\n      n:\n        aliases: x\nnetworks:\n  n: {}\n',
        'stack.yaml:6:18: services.web.networks.n.aliases: "x": must be a list',
        id='aliases',
    ),
    pytest.param(
        'services: [web]\n',
        'stack.yaml:1:11: services: must be a mapping, not a list',
        id='services_list',
    ),
]


@pytest.mark.parametrize(("text", "message"), CASES)
def test_bad_input_message(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "stack.yaml").write_text(text)
    with pytest.raises(SpecError) as info:
        load(LoadOptions(files=("stack.yaml",), environ={"HOME": "/root"}, working_dir=str(tmp_path)))
    assert str(info.value) == message.replace("{dir}", str(tmp_path))


def test_at_least_twenty_kinds() -> None:
    assert len(CASES) >= 20
