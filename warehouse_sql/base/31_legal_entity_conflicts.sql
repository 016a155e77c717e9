-- target: quality.conflicts
-- library: legal_entity
-- key: subject_id
-- attributes: name, legal_rep_name, address
-- authority: business_registration
-- sources: business_registration(uscc), business_licence(uscc), tax_payment(uscc), public_credit_record(uscc)
-- What each source says about an entity's name, legal representative and domicile (the
-- licence, the tax bureau's taxpayer name, the credit platform's records); compared with the
-- resource the catalog declares authoritative for legal_entity.<attribute> (market
-- regulation's registry in the demo catalog, also the default).
SELECT {{ code('business_registration') }} AS resource, uscc AS subject_id, name, legal_rep_name, address
FROM {{ source('business_registration') }} WHERE {{ in_scope('uscc') }}
UNION ALL
SELECT {{ code('business_licence') }}, uscc, name, legal_rep_name, address
FROM {{ source('business_licence') }} WHERE {{ in_scope('uscc') }}
UNION ALL
SELECT {{ code('tax_payment') }}, uscc, taxpayer_name, NULL, NULL
FROM {{ source('tax_payment') }} WHERE {{ in_scope('uscc') }}
UNION ALL
SELECT {{ code('public_credit_record') }}, uscc, entity_name, legal_rep_name, NULL
FROM {{ source('public_credit_record') }} WHERE {{ in_scope('uscc') }}
