-- target: quality.conflicts
-- library: legal_entity
-- key: subject_id
-- attributes: name, legal_rep_name, address
-- authority: business_registration
-- sources: business_registration(uscc), business_licence(uscc), tax_payment(uscc)
-- What each source says about an entity's name, legal representative and domicile; compared
-- with the resource the catalog declares authoritative for legal_entity.<attribute>
-- (default: market regulation's registry).
SELECT {{ code('business_registration') }} AS resource, uscc AS subject_id, name, legal_rep_name, address
FROM {{ source('business_registration') }} WHERE {{ in_scope('uscc') }}
UNION ALL
SELECT {{ code('business_licence') }}, uscc, name, legal_rep_name, address
FROM {{ source('business_licence') }} WHERE {{ in_scope('uscc') }}
UNION ALL
SELECT {{ code('tax_payment') }}, uscc, taxpayer_name, NULL, NULL
FROM {{ source('tax_payment') }} WHERE {{ in_scope('uscc') }}
