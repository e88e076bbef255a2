package dashboards

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/grafana/grafana-foundation-sdk/go/cog"
	"github.com/grafana/grafana-foundation-sdk/go/cog/variants"
	"github.com/grafana/grafana-foundation-sdk/go/common"
)

// PostgresDatasourceType is the plugin id of Grafana's built-in PostgreSQL
// data source (Grafana 10.2 on; "postgres" before).
const PostgresDatasourceType = "grafana-postgresql-datasource"

// ArchiveDatasourceUID is the uid of the archive's PostgreSQL data source,
// as provisioning/datasources/archive.yaml creates it.
const ArchiveDatasourceUID = "sensorfarm-archive"

// SQL query formats of Grafana's SQL data sources.
const (
	SQLFormatTimeSeries = "time_series"
	SQLFormatTable      = "table"
)

// SQLQuery is one raw SQL query of Grafana's SQL data sources (the front
// end's SQLQuery, public/app/features/plugins/sql/types.ts) as a dashboard
// or an alert rule stores it, in code mode. The SDK has no type for it.
type SQLQuery struct {
	RefID      string                `json:"refId"`
	Datasource *common.DataSourceRef `json:"datasource,omitempty"`
	// RawSQL may use Grafana's macros ($__timeFilter, $__timeGroupAlias).
	RawSQL     string `json:"rawSql"`
	Format     string `json:"format"`
	EditorMode string `json:"editorMode"`
	RawQuery   bool   `json:"rawQuery"`
}

var _ variants.Dataquery = SQLQuery{}

// ImplementsDataqueryVariant marks SQLQuery as a data query for the SDK.
func (SQLQuery) ImplementsDataqueryVariant() {}

// DataqueryType is the data source type the SDK's runtime files it under.
func (SQLQuery) DataqueryType() string { return PostgresDatasourceType }

// Validate refuses a query Grafana could not run.
func (q SQLQuery) Validate() error {
	var errs cog.BuildErrors
	if q.RefID == "" {
		errs = append(errs, cog.MakeBuildErrors("refId", errors.New("is empty"))...)
	}
	if q.RawSQL == "" {
		errs = append(errs, cog.MakeBuildErrors("rawSql", errors.New("is empty"))...)
	}
	if q.Format != SQLFormatTimeSeries && q.Format != SQLFormatTable {
		errs = append(errs, cog.MakeBuildErrors("format", fmt.Errorf("%q is neither %s nor %s", q.Format, SQLFormatTimeSeries, SQLFormatTable))...)
	}
	if len(errs) == 0 {
		return nil
	}
	return errs
}

// Equals compares two queries field by field.
func (q SQLQuery) Equals(other variants.Dataquery) bool {
	o, ok := other.(SQLQuery)
	if !ok {
		return false
	}
	if (q.Datasource == nil) != (o.Datasource == nil) || (q.Datasource != nil && !q.Datasource.Equals(*o.Datasource)) {
		return false
	}
	return q.RefID == o.RefID && q.RawSQL == o.RawSQL && q.Format == o.Format && q.EditorMode == o.EditorMode && q.RawQuery == o.RawQuery
}

// sqlVariant tells the SDK's runtime how to decode a PostgreSQL query.
func sqlVariant() variants.DataqueryConfig {
	decode := func(raw []byte, strict bool) (variants.Dataquery, error) {
		var q SQLQuery
		dec := json.NewDecoder(bytes.NewReader(raw))
		if strict {
			dec.DisallowUnknownFields()
		}
		if err := dec.Decode(&q); err != nil {
			return nil, fmt.Errorf("SQL query: %w", err)
		}
		if strict {
			if err := q.Validate(); err != nil {
				return nil, fmt.Errorf("SQL query: %w", err)
			}
		}
		return q, nil
	}
	return variants.DataqueryConfig{
		Identifier:                 PostgresDatasourceType,
		DataqueryUnmarshaler:       func(raw []byte) (variants.Dataquery, error) { return decode(raw, false) },
		StrictDataqueryUnmarshaler: func(raw []byte) (variants.Dataquery, error) { return decode(raw, true) },
	}
}

// SQLQueryBuilder builds an SQLQuery on the archive's data source.
type SQLQueryBuilder struct{ q SQLQuery }

var _ cog.Builder[variants.Dataquery] = (*SQLQueryBuilder)(nil)

// NewSQLQueryBuilder starts a query in code mode on the archive.
func NewSQLQueryBuilder(refID, format, rawSQL string) *SQLQueryBuilder {
	ref := archiveRef()
	return &SQLQueryBuilder{q: SQLQuery{RefID: refID, Datasource: &ref, RawSQL: rawSQL, Format: format, EditorMode: "code", RawQuery: true}}
}

// Build implements cog.Builder.
func (b *SQLQueryBuilder) Build() (variants.Dataquery, error) {
	if err := b.q.Validate(); err != nil {
		return nil, err
	}
	return b.q, nil
}

func archiveRef() common.DataSourceRef {
	return common.DataSourceRef{Type: cog.ToPtr(PostgresDatasourceType), Uid: cog.ToPtr(ArchiveDatasourceUID)}
}
