# The core flow of apim, as a user scripts it with curl and jq: register a
# client, get a token, create, revise, deploy and publish an API, subscribe an
# application, get its keys and call the API through Envoy.
# `make run` prints this; the end-to-end suite runs it as it is.
APIM=${APIM:-https://localhost:9443}
GW=${GW:-http://localhost:8280}
CA=${CA:-.data/tls/server.crt}
BACKEND=${BACKEND:-http://127.0.0.1:9080}
ADMIN_PASSWORD=${ADMIN_PASSWORD:-admin}
set -euo pipefail
c() { curl -sS --fail-with-body --cacert "$CA" "$@"; }
J='Content-Type: application/json'

# 1. Register a REST API client (dynamic client registration, as the admin).
CLIENT=$(c -u "admin:$ADMIN_PASSWORD" -H "$J" "$APIM/client-registration/v0.17/register" \
  -d '{"clientName":"rest_api_client","owner":"admin","grantType":"client_credentials password refresh_token","saasApp":true}')
CID=$(jq -r .clientId <<<"$CLIENT"); CSECRET=$(jq -r .clientSecret <<<"$CLIENT")

# 2. A user token with the REST API scopes (password grant).
TOKEN=$(c -u "$CID:$CSECRET" "$APIM/oauth2/token" -d grant_type=password -d username=admin \
  -d "password=$ADMIN_PASSWORD" --data-urlencode 'scope=apim:api_view apim:api_create apim:api_publish apim:subscribe apim:app_manage apim:sub_manage' | jq -r .access_token)
AUTH="Authorization: Bearer $TOKEN"

# 3. Create an API, 4. a revision of it, 5. deploy the revision to "Default", 6. publish it.
API=$(c -H "$AUTH" -H "$J" "$APIM/api/am/publisher/v4/apis" -d '{"name":"PizzaShack","context":"/pizzashack","version":"1.0.0",
  "endpointConfig":{"endpoint_type":"http","production_endpoints":{"url":"'"$BACKEND"'/pizza"}},
  "operations":[{"target":"/menu","verb":"GET"},{"target":"/order/{orderId}","verb":"GET"}],"policies":["Gold","Unlimited"]}' | jq -r .id)
REV=$(c -H "$AUTH" -H "$J" "$APIM/api/am/publisher/v4/apis/$API/revisions" -d '{"description":"first revision"}' | jq -r .id)
c -H "$AUTH" -H "$J" "$APIM/api/am/publisher/v4/apis/$API/deploy-revision?revisionId=$REV" \
  -d '[{"name":"Default","vhost":"localhost","displayOnDevportal":true}]' >/dev/null
c -H "$AUTH" -X POST "$APIM/api/am/publisher/v4/apis/change-lifecycle?apiId=$API&action=Publish" >/dev/null

# 7. The devportal lists it.
c -H "$AUTH" "$APIM/api/am/devportal/v3/apis" | jq -r '.list[] | "\(.name) \(.version) \(.lifeCycleStatus)"'

# 8. An application, 9. subscribed to the API, 10. with production keys.
APP=$(c -H "$AUTH" -H "$J" "$APIM/api/am/devportal/v3/applications" \
  -d '{"name":"DemoApp","throttlingPolicy":"Unlimited","description":"demo","tokenType":"JWT"}' | jq -r .applicationId)
c -H "$AUTH" -H "$J" "$APIM/api/am/devportal/v3/subscriptions" \
  -d '{"applicationId":"'"$APP"'","apiId":"'"$API"'","throttlingPolicy":"Gold"}' | jq -r .status
KEYS=$(c -H "$AUTH" -H "$J" "$APIM/api/am/devportal/v3/applications/$APP/generate-keys" \
  -d '{"keyType":"PRODUCTION","grantTypesToBeSupported":["client_credentials"]}')
CK=$(jq -r .consumerKey <<<"$KEYS"); CS=$(jq -r .consumerSecret <<<"$KEYS")

# 11. The application's token (client credentials), 12. a call through Envoy.
APP_TOKEN=$(c -u "$CK:$CS" "$APIM/oauth2/token" -d grant_type=client_credentials | jq -r .access_token)
for i in 1 2 3 4 5 6 7 8 9 10; do   # the gateway takes the deployment within a second
  curl -sS --fail-with-body -H "Authorization: Bearer $APP_TOKEN" "$GW/pizzashack/1.0.0/menu" && break || sleep 0.3
done
