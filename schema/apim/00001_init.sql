-- API-manager database: APIs, revisions, deployments, applications, keys,
-- subscriptions, policies, lifecycle history, OAuth clients and the outbox.

-- +goose Up
CREATE SEQUENCE generation_seq;

CREATE TABLE apis (
    id               uuid PRIMARY KEY,
    organization     text NOT NULL DEFAULT 'carbon.super',
    name             text NOT NULL,
    description      text NOT NULL DEFAULT '',
    context          text NOT NULL,
    version          text NOT NULL,
    provider         text NOT NULL,
    lifecycle_status text NOT NULL DEFAULT 'CREATED',
    policies         text[] NOT NULL DEFAULT '{}',
    generation       bigint NOT NULL DEFAULT nextval('generation_seq'),
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    UNIQUE (organization, context, version),
    UNIQUE (organization, name, version)
);

CREATE TABLE api_endpoints (
    api_id uuid NOT NULL REFERENCES apis (id) ON DELETE CASCADE,
    kind   text NOT NULL CHECK (kind IN ('production', 'sandbox')),
    url    text NOT NULL,
    PRIMARY KEY (api_id, kind)
);

CREATE TABLE api_resources (
    api_id            uuid NOT NULL REFERENCES apis (id) ON DELETE CASCADE,
    position          int NOT NULL,
    verb              text NOT NULL,
    target            text NOT NULL,
    auth_type         text NOT NULL,
    throttling_policy text NOT NULL,
    scopes            text[] NOT NULL DEFAULT '{}',
    PRIMARY KEY (api_id, verb, target)
);

-- A revision freezes the whole API definition (model.API as JSON).
CREATE TABLE api_revisions (
    id          uuid PRIMARY KEY,
    api_id      uuid NOT NULL REFERENCES apis (id) ON DELETE CASCADE,
    number      int NOT NULL,
    description text NOT NULL DEFAULT '',
    definition  jsonb NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (api_id, number)
);

CREATE TABLE gateway_environments (
    name         text PRIMARY KEY,
    display_name text NOT NULL,
    vhost        text NOT NULL DEFAULT 'localhost'
);
INSERT INTO gateway_environments (name, display_name) VALUES ('Default', 'Default');

-- One revision of an API per environment, as in WSO2.
CREATE TABLE api_deployments (
    api_id               uuid NOT NULL REFERENCES apis (id) ON DELETE CASCADE,
    environment          text NOT NULL REFERENCES gateway_environments (name),
    revision_id          uuid NOT NULL REFERENCES api_revisions (id) ON DELETE CASCADE,
    vhost                text NOT NULL,
    display_on_devportal boolean NOT NULL DEFAULT true,
    generation           bigint NOT NULL DEFAULT nextval('generation_seq'),
    deployed_at          timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (api_id, environment)
);

CREATE TABLE lifecycle_history (
    id             bigserial PRIMARY KEY,
    api_id         uuid NOT NULL REFERENCES apis (id) ON DELETE CASCADE,
    previous_state text NOT NULL,
    post_state     text NOT NULL,
    actor          text NOT NULL,
    at             timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE throttling_policies (
    level               text NOT NULL CHECK (level IN ('subscription', 'application', 'api')),
    name                text NOT NULL,
    display_name        text NOT NULL DEFAULT '',
    description         text NOT NULL DEFAULT '',
    request_count       bigint NOT NULL DEFAULT 0, -- 0 is unlimited
    unit_time           bigint NOT NULL DEFAULT 1,
    time_unit           text NOT NULL DEFAULT 'min',
    stop_on_quota_reach boolean NOT NULL DEFAULT true,
    billing_plan        text NOT NULL DEFAULT 'FREE',
    generation          bigint NOT NULL DEFAULT nextval('generation_seq'),
    PRIMARY KEY (level, name)
);
INSERT INTO throttling_policies (level, name, display_name, description, request_count, time_unit) VALUES
    ('subscription', 'Gold', 'Gold', 'Allows 5000 requests per minute', 5000, 'min'),
    ('subscription', 'Silver', 'Silver', 'Allows 2000 requests per minute', 2000, 'min'),
    ('subscription', 'Bronze', 'Bronze', 'Allows 1000 requests per minute', 1000, 'min'),
    ('subscription', 'Unauthenticated', 'Unauthenticated', 'Allows 500 request per minute', 500, 'min'),
    ('subscription', 'Unlimited', 'Unlimited', 'Allows unlimited requests', 0, 'min'),
    ('application', '50PerMin', '50PerMin', 'Allows 50 request per minute', 50, 'min'),
    ('application', '20PerMin', '20PerMin', 'Allows 20 request per minute', 20, 'min'),
    ('application', '10PerMin', '10PerMin', 'Allows 10 request per minute', 10, 'min'),
    ('application', 'Unlimited', 'Unlimited', 'Allows unlimited requests', 0, 'min'),
    ('api', 'Unlimited', 'Unlimited', 'Allows unlimited requests', 0, 'min');

CREATE TABLE applications (
    id                uuid PRIMARY KEY,
    name              text NOT NULL,
    owner             text NOT NULL,
    description       text NOT NULL DEFAULT '',
    throttling_policy text NOT NULL,
    token_type        text NOT NULL DEFAULT 'JWT',
    status            text NOT NULL DEFAULT 'APPROVED',
    generation        bigint NOT NULL DEFAULT nextval('generation_seq'),
    created_at        timestamptz NOT NULL DEFAULT now(),
    UNIQUE (owner, name)
);

-- OAuth clients of the resident key manager. Secrets are stored hashed.
CREATE TABLE oauth_clients (
    client_id     text PRIMARY KEY,
    secret_hash   text NOT NULL,
    name          text NOT NULL,
    owner         text NOT NULL,
    grant_types   text[] NOT NULL,
    redirect_uris text[] NOT NULL DEFAULT '{}',
    created_at    timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE key_mappings (
    id             uuid PRIMARY KEY,
    application_id uuid NOT NULL REFERENCES applications (id) ON DELETE CASCADE,
    key_type       text NOT NULL CHECK (key_type IN ('PRODUCTION', 'SANDBOX')),
    key_manager    text NOT NULL DEFAULT 'Resident Key Manager',
    consumer_key   text NOT NULL UNIQUE REFERENCES oauth_clients (client_id),
    generation     bigint NOT NULL DEFAULT nextval('generation_seq'),
    UNIQUE (application_id, key_type, key_manager)
);

CREATE TABLE subscriptions (
    id                uuid PRIMARY KEY,
    application_id    uuid NOT NULL REFERENCES applications (id) ON DELETE CASCADE,
    api_id            uuid NOT NULL REFERENCES apis (id) ON DELETE CASCADE,
    throttling_policy text NOT NULL,
    status            text NOT NULL DEFAULT 'UNBLOCKED',
    generation        bigint NOT NULL DEFAULT nextval('generation_seq'),
    created_at        timestamptz NOT NULL DEFAULT now(),
    UNIQUE (application_id, api_id)
);

-- Events written in the same transaction as the change they describe; the
-- relay publishes them to Kafka in id order and deletes them.
CREATE TABLE outbox (
    id         bigserial PRIMARY KEY,
    topic      text NOT NULL,
    key        text NOT NULL,
    payload    jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- +goose Down
DROP TABLE outbox, subscriptions, key_mappings, oauth_clients, applications,
    throttling_policies, lifecycle_history, api_deployments, gateway_environments,
    api_revisions, api_resources, api_endpoints, apis;
DROP SEQUENCE generation_seq;
