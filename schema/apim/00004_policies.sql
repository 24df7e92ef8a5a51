-- Throttling policies as WSO2 API-M 4.x has them: burst control and
-- bandwidth quotas on subscription policies, condition groups on advanced
-- (api-level) policies, custom rules (a key template and a CEL condition in
-- place of WSO2's Siddhi query), calendar units, and deny (blocking)
-- conditions. policy_id is the WSO2 policyId the admin API addresses.

-- +goose Up
ALTER TABLE throttling_policies DROP CONSTRAINT throttling_policies_level_check;
ALTER TABLE throttling_policies ADD CONSTRAINT throttling_policies_level_check
    CHECK (level IN ('subscription', 'application', 'api', 'custom'));
ALTER TABLE throttling_policies
    ADD COLUMN policy_id            uuid NOT NULL DEFAULT gen_random_uuid() UNIQUE,
    ADD COLUMN quota_type           text NOT NULL DEFAULT 'requestCount' CHECK (quota_type IN ('requestCount', 'bandwidth')),
    ADD COLUMN data_amount          bigint NOT NULL DEFAULT 0,
    ADD COLUMN data_unit            text NOT NULL DEFAULT '' CHECK (data_unit IN ('', 'KB', 'MB')),
    ADD COLUMN rate_limit_count     bigint NOT NULL DEFAULT 0,
    ADD COLUMN rate_limit_time_unit text NOT NULL DEFAULT '' CHECK (rate_limit_time_unit IN ('', 'sec', 'min')),
    ADD COLUMN conditional_groups   jsonb NOT NULL DEFAULT '[]',
    ADD COLUMN key_template         text NOT NULL DEFAULT '',
    ADD COLUMN condition            text NOT NULL DEFAULT '',
    ADD CONSTRAINT throttling_policies_time_unit_check
        CHECK (time_unit IN ('sec', 'min', 'hour', 'day', 'month', 'year'));

-- WSO2's default advanced policies ('api', 'Unlimited' exists since 00001).
INSERT INTO throttling_policies (level, name, display_name, description, request_count, time_unit) VALUES
    ('api', '50KPerMin', '50KPerMin', 'Allows 50000 requests per minute', 50000, 'min'),
    ('api', '20KPerMin', '20KPerMin', 'Allows 20000 requests per minute', 20000, 'min'),
    ('api', '10KPerMin', '10KPerMin', 'Allows 10000 requests per minute', 10000, 'min')
ON CONFLICT (level, name) DO NOTHING;

CREATE TABLE deny_policies (
    id              uuid PRIMARY KEY,
    condition_type  text NOT NULL CHECK (condition_type IN ('API', 'APPLICATION', 'IP', 'IPRANGE', 'USER')),
    condition_value jsonb NOT NULL, -- WSO2's conditionValue: a string, or {fixedIp|startingIp,endingIp, invert}
    status          boolean NOT NULL DEFAULT true,
    generation      bigint NOT NULL DEFAULT nextval('generation_seq'),
    created_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (condition_type, condition_value)
);

-- +goose Down
DROP TABLE deny_policies;
DELETE FROM throttling_policies WHERE level = 'custom'
    OR (level = 'api' AND name IN ('50KPerMin', '20KPerMin', '10KPerMin'));
UPDATE throttling_policies SET time_unit = 'day', unit_time = unit_time * 30 WHERE time_unit = 'month';
UPDATE throttling_policies SET time_unit = 'day', unit_time = unit_time * 365 WHERE time_unit = 'year';
ALTER TABLE throttling_policies
    DROP CONSTRAINT throttling_policies_time_unit_check,
    DROP COLUMN policy_id, DROP COLUMN quota_type, DROP COLUMN data_amount, DROP COLUMN data_unit,
    DROP COLUMN rate_limit_count, DROP COLUMN rate_limit_time_unit, DROP COLUMN conditional_groups,
    DROP COLUMN key_template, DROP COLUMN condition;
ALTER TABLE throttling_policies DROP CONSTRAINT throttling_policies_level_check;
ALTER TABLE throttling_policies ADD CONSTRAINT throttling_policies_level_check
    CHECK (level IN ('subscription', 'application', 'api'));
