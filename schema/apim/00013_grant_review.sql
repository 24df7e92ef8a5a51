-- The JWT bearer grant used to be stored and not served; since 00011 it is
-- served. Clients registered with it before then never asked for a grant
-- that works: it is taken from them, and their owners grant it again
-- (PUT oauth-keys) if they want it.
--
-- The key manager finds an OAuth client's key mapping by the client id on
-- every token request (resident mappings: key_manager_id IS NULL); the
-- generated column it joined on had no index.

-- +goose Up
UPDATE oauth_clients SET grant_types = array_remove(grant_types, 'urn:ietf:params:oauth:grant-type:jwt-bearer')
WHERE 'urn:ietf:params:oauth:grant-type:jwt-bearer' = ANY (grant_types);
CREATE INDEX key_mappings_resident_client ON key_mappings (resident_client_id) WHERE resident_client_id IS NOT NULL;

-- +goose Down
DROP INDEX key_mappings_resident_client;
