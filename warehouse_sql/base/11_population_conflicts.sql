-- target: quality.conflicts
-- library: population
-- key: subject_id
-- attributes: name, gender, birth_date, address
-- authority: household_register
-- sources: household_register(resident_id), identity_card(resident_id), marriage_registration(male_id, female_id), degree_certificate(resident_id), social_insurance(resident_id), provident_fund_account(resident_id), student_enrolment(resident_id)
-- What each source says about a person's name, gender, birth date and address (NULL: the
-- source does not record it). The runner compares every value with the one of the resource
-- the catalog declares authoritative for population.<attribute> (default: the household
-- register) and keeps disagreements in quality.conflicts, attributed to that resource.
SELECT {{ code('household_register') }} AS resource, resident_id AS subject_id, name, gender, birth_date, address
FROM {{ source('household_register') }} WHERE {{ in_scope('resident_id') }}
UNION ALL
SELECT {{ code('identity_card') }}, resident_id, name, gender, birth_date, address
FROM {{ source('identity_card') }} WHERE {{ in_scope('resident_id') }}
UNION ALL
SELECT {{ code('marriage_registration') }}, male_id, male_name, NULL, NULL, NULL
FROM {{ source('marriage_registration') }} WHERE {{ in_scope('male_id') }}
UNION ALL
SELECT {{ code('marriage_registration') }}, female_id, female_name, NULL, NULL, NULL
FROM {{ source('marriage_registration') }} WHERE {{ in_scope('female_id') }}
UNION ALL
SELECT {{ code('degree_certificate') }}, resident_id, name, gender, NULL, NULL
FROM {{ source('degree_certificate') }} WHERE {{ in_scope('resident_id') }}
UNION ALL
SELECT {{ code('social_insurance') }}, resident_id, name, NULL, NULL, NULL
FROM {{ source('social_insurance') }} WHERE {{ in_scope('resident_id') }}
UNION ALL
SELECT {{ code('provident_fund_account') }}, resident_id, name, NULL, NULL, NULL
FROM {{ source('provident_fund_account') }} WHERE {{ in_scope('resident_id') }}
UNION ALL
SELECT {{ code('student_enrolment') }}, resident_id, name, gender, birth_date, NULL
FROM {{ source('student_enrolment') }} WHERE {{ in_scope('resident_id') }}
