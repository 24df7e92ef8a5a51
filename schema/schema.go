// Package schema holds the database migrations of the API-manager database and
// the shared database, and documents the Kafka topics in events.md.
package schema

import "embed"

// APIM holds the API-manager database's migrations, in goose's format.
//
//go:embed apim/*.sql
var APIM embed.FS

// Shared holds the shared database's migrations, in goose's format.
//
//go:embed shared/*.sql
var Shared embed.FS
